"""Serving on Triton Inference Server: a model repository for the network, and whole-CT segmentation served
through PyTriton (``tuckertrt serve``) with its client (``tuckertrt segment --server``)."""
