"""Wire protocol, client and generation settings shared by the backend and the Blender add-on.

Pure Python (+ pyzmq for the protocol): nothing here may import torch.
"""
PROTOCOL_VERSION = "1.0"
