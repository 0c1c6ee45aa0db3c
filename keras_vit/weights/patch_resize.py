"""The PI-resize math's former home, kept so that imports from here keep working.

It moved to `keras_vit.patch_resize`, beside `keras_vit.resample`: it is pure resampling, which
the checkpoint readers use, and living in `keras_vit.weights` made them import the package that
imports them. The public name is `keras_vit.pi_resize_patch_embedding`.
"""

from keras_vit.patch_resize import (  # noqa: F401 (re-exported)
    PATCH_EMBED_RESAMPLE,
    pi_resize_patch_embedding,
    resize_matrix,
)
