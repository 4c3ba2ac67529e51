"""Tucker-2 decomposition of convolutions: ranks, the factorised layer, accounting, save/load."""
from tuckertrt.decomposition.apply import decompose, decompose_network
from tuckertrt.decomposition.layers import TuckerConv
from tuckertrt.decomposition.ranks import plan_ranks, rank_for

__all__ = ["TuckerConv", "decompose", "decompose_network", "plan_ranks", "rank_for"]
