"""The paper's analyses (Sec. 4.5, Fig. 6-7, Appendix D.7-D.8) for any ViT of this library.

Example:

>>> import numpy as np, keras_vit
>>> from keras_vit import analysis
>>> model = keras_vit.ViT(image_size=32, patch_size=8, hidden_size=32, num_layers=2,
...                       num_heads=4, mlp_dim=64, classes=10)
>>> images = np.random.uniform(0, 255, (2, 32, 32, 3))
>>> attention = analysis.attention_maps(model, images)          # (layers, B, heads, T, T)
>>> rows, cols, prefix, pixels = analysis.token_layout(model)
>>> tuple(analysis.mean_attention_distance(attention, rows, cols, pixels, prefix).shape)
(2, 4)
"""

from keras_vit.analysis.attention import (
    attention_maps,
    attention_rollout,
    last_layer_class_attention,
    mean_attention_distance,
    patch_centres,
    rollout_maps,
    token_layout,
)
from keras_vit.analysis.embeddings import (
    patch_embedding_filters,
    patch_position_embeddings,
    position_embedding_similarity,
)
