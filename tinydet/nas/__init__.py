"""Joint architecture + patch-schedule search (MCUNetV2-style).

    space = space_from_config(cfg["search"])        # what may vary (pure)
    cand = space.sample(random.Random(0))            # one network + schedule
    spec = cand.to_spec(space)                       # an ordinary ArchSpec
    metrics = evaluate_constraints(cand, space, head, budget)   # peak SRAM / Flash / MACs (pure)

``supernet`` (torch) trains the weight-sharing network; ``evolution`` searches it.
"""
from tinydet.nas.space import Candidate, ClassifierHead, SearchSpace, StageSpace, space_from_config

__all__ = ["Candidate", "ClassifierHead", "SearchSpace", "StageSpace", "space_from_config"]
