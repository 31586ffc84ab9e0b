"""Privacy and fidelity metrics: attack accuracy under several judges, the chance baseline,
KNN distance (faiss), FID, PRDC, and the statistics (intervals, paired comparisons, design
power) that say which differences are real.

Higher attack accuracy = stronger attack (weaker defense); lower KNN distance and FID =
reconstructions closer to the private data.
"""

from .accuracy import attack_accuracy
from .distribution import frechet_distance, inception_fid, prdc, prdc_per_class
from .judges import (JUDGE_TABLE, JudgeBench, JudgeSpec, accepted_prior_samples, chance_acceptance, classifier_hits,
                     judge_agreement, judged_public, pixel_judge, register_judge, reject_radius, topk_reported,
                     unregister_judge)
from .knn import PrivateIndex, knn_distance
from .stats import (NO_DIFFERENCE, bootstrap_interval, cluster_means, clustered_interval, compare_with_none,
                    design_mde, expected_half_width, judgement_intervals, minimum_detectable_effect, paired_comparison,
                    variance_components)

attack_accuracy.higher_is_better = True
knn_distance.higher_is_better = False
frechet_distance.higher_is_better = False

__all__ = ["attack_accuracy", "knn_distance", "PrivateIndex", "frechet_distance", "prdc", "prdc_per_class",
           "inception_fid", "classifier_hits", "judged_public", "pixel_judge", "reject_radius", "judge_agreement",
           "topk_reported", "accepted_prior_samples", "chance_acceptance", "bootstrap_interval",
           "clustered_interval", "cluster_means", "paired_comparison", "variance_components",
           "expected_half_width", "minimum_detectable_effect", "design_mde", "NO_DIFFERENCE", "JUDGE_TABLE", "JudgeSpec", "JudgeBench",
           "register_judge", "unregister_judge", "judgement_intervals", "compare_with_none"]
