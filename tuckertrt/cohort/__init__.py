"""Cohorts on Ray: the model loaded once per worker, cases scheduled across the cluster, resumable runs."""
from tuckertrt.cohort.ray_runner import CohortOptions, cohort_plan, run_cohort
from tuckertrt.cohort.records import CaseRecord, CohortSummary

__all__ = ["CaseRecord", "CohortOptions", "CohortSummary", "cohort_plan", "run_cohort"]
