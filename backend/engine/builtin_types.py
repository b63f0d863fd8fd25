"""The built-in guidance and geometry types: importing this module registers them.

Each module below carries its type's ``@register`` line (``backend.engine.registry``); a new
built-in type is one import here, plus its name in ``shared/settings.py``. The trainer and the
guidance loader import this module before they ``find`` a type by its setting.
"""

import backend.engine.field  # noqa: F401  geometry "implicit-volume"
import backend.engine.sdf_field  # noqa: F401  geometry "implicit-sdf"
import backend.engine.guidance.stable_diffusion  # noqa: F401  guidance "stable-diffusion"
import backend.engine.guidance.zero123  # noqa: F401  guidance "zero123"
