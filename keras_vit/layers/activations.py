"""`gelu`: the MLP's activation (paper Sec. 3.1), exact or tanh-approximate.

    exact:  GELU(z) = z Phi(z) = z/2 (1 + erf(z / sqrt 2))
    tanh:   GELU(z) ~ z/2 (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))

The portable definition is `keras_vit.kernels.reference.gelu`; each backend's implementation
(PyTorch's in-place kernel, TensorFlow's compiled gradient) is in `keras_vit.kernels`.
"""

from keras_vit.kernels import gelu

__all__ = ["gelu"]
