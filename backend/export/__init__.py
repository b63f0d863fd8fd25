"""Export stage: trained field -> textured GLB (Y-up, for Blender) and a turntable preview.

- ``mesh``: marching cubes, floater removal, decimation, UV atlas, texture bake, GLB, the whole
  chain (``export_field``) and the live-preview ``proxy_glb``.
- ``raster``: the numpy triangle rasteriser behind the bake and the turntable.
- ``turntable``: product-shot views of the exported mesh.
- ``bench_export``: stage timings on an analytic field (``python -m backend.export.bench_export``).
"""
