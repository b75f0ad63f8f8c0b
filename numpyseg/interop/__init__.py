"""Bridges to other tools: ONNX models, PyTorch state dicts, PyTorch distributed training.

    numpyseg.interop.convert      `numpyseg export --format`: the entry point of every conversion
    numpyseg.interop.weights      which weights file a path names (a run folder or an .npz)
    numpyseg.interop.onnx_export  numpyseg weights -> an ONNX graph (extra: numpyseg[onnx])
    numpyseg.interop.torch_bridge numpyseg weights <-> a PyTorch state dict (extra: numpyseg[parity])
    numpyseg.interop.ddp_train    train the PyTorch twin on several processes / GPUs / machines

Each imports its optional package lazily and, when it is missing, raises a one-line
error naming the extra to install.
"""
