"""PyTorch (out, in) layouts -> the official JAX layout, shared by the HF and timm converters."""

import numpy as np


def dense_kernel(weight):
    """nn.Linear weight (out, in) -> Dense kernel (in, out)."""
    return np.ascontiguousarray(np.asarray(weight).T)


def conv_kernel(weight):
    """nn.Conv2d weight (out, in, kh, kw) -> HWIO (kh, kw, in, out)."""
    return np.ascontiguousarray(np.asarray(weight).transpose(2, 3, 1, 0))


def attention_in(weight, bias, num_heads):
    """q/k/v nn.Linear (H*dh, D) and (H*dh,) -> official kernel (D, H, dh) and bias (H, dh)."""
    weight = np.asarray(weight)
    width, hidden = weight.shape
    if width % num_heads:
        raise ValueError(f"attention width {width} is not divisible by num_heads {num_heads}")
    kernel = dense_kernel(weight).reshape(hidden, num_heads, width // num_heads)
    return kernel, np.asarray(bias).reshape(num_heads, width // num_heads)


def attention_out(weight, num_heads):
    """out-projection nn.Linear (D, H*dh) -> official kernel (H, dh, D)."""
    weight = np.asarray(weight)
    hidden, width = weight.shape
    if width % num_heads:
        raise ValueError(f"attention width {width} is not divisible by num_heads {num_heads}")
    return dense_kernel(weight).reshape(num_heads, width // num_heads, hidden)


class KeyMapper:
    """Collects converted arrays and the keys that nothing claimed."""

    def __init__(self, state, source):
        self.state = {k: np.asarray(v) for k, v in state.items()}
        self.source = source
        self.used = set()
        self.out = {}

    def take(self, key):
        self.used.add(key)
        return self.state[key]

    def has(self, key):
        return key in self.state

    def put(self, key, value):
        self.out[key] = np.asarray(value, dtype=np.float32) if np.asarray(value).dtype.kind == "f" \
            else np.asarray(value)

    def finish(self, ignore=()):
        unknown = sorted(k for k in self.state if k not in self.used and not k.startswith(ignore))
        if unknown:
            listed = ", ".join(unknown[:12]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 12 else "")
            raise ValueError(
                f"{self.source}: keys this ViT converter does not understand: {listed}. "
                "The checkpoint is probably a different architecture (layer scale, register "
                "tokens, fc_norm, qk-norm, ...), which keras_vit does not implement."
            )
        return self.out
