"""keras-vit's runnable programs, behind the `keras-vit` command (see `cli`).

These modules use `keras_vit` (the model) and `tf_data` (the input pipeline);
neither of those imports anything from here.
"""
