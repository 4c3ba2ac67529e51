"""Tucker-2 decomposition of convolutions: ranks, the factorised layer, accounting, save/load (any MODEL)."""
from tuckertrt.decomposition.apply import decompose, decompose_network
from tuckertrt.decomposition.layers import TuckerConv
from tuckertrt.decomposition.ranks import plan_ranks, rank_for
from tuckertrt.decomposition.serialize import load_model, load_models

__all__ = ["TuckerConv", "decompose", "decompose_network", "load_model", "load_models", "plan_ranks", "rank_for"]
