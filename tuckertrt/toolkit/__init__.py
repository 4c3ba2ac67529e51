"""The paper's experimental toolkit: explained-variance maps, the pruning baseline, statistics and plots."""
