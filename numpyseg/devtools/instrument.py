"""Watch layers at work: temporarily wrap a layer class's method with a function of ours.

The benchmark uses this twice: to time each layer type (numpyseg.devtools.benchmark.layer_profile)
and to record the shapes every convolution sees, from which the model's FLOPs are counted
(numpyseg.devtools.roofline.conv_layer_shapes).  The class's own method is put back on exit, even
after an error, so nothing changes outside the `with` block.
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def wrapped_methods(targets):
    """Replace methods of classes by wrappers while the block runs.

    Args:
        targets: iterable of (cls, method_name, make_wrapper); make_wrapper(original)
            returns the function that replaces `cls.method_name` (it receives the
            same arguments, `self` first, and usually calls `original`).

    A method the class only inherits is removed again on exit (not copied onto the
    class), so the class is left exactly as it was.
    """
    patched = []
    try:
        for cls, name, make_wrapper in targets:
            own = cls.__dict__.get(name)
            original = getattr(cls, name)
            patched.append((cls, name, own))
            setattr(cls, name, make_wrapper(original))
        yield
    finally:
        for cls, name, own in reversed(patched):
            if own is None:
                delattr(cls, name)  # the method was inherited: uncover it again
            else:
                setattr(cls, name, own)
