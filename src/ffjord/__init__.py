"""Continuous normalizing flows (FFJORD) in JAX."""

from ._bijector import AbstractBijector as AbstractBijector
from ._bijector import Affine as Affine
from ._bijector import Chain as Chain
from ._bijector import SolveStats as SolveStats
from ._distributions import MultivariateNormalDiag as MultivariateNormalDiag
from ._distributions import TransformedDistribution as TransformedDistribution
from ._errors import InputError as InputError
from ._ffjord import FFJORD as FFJORD
from ._trace import AbstractTrace as AbstractTrace
from ._trace import ExactTrace as ExactTrace
from ._trace import HutchinsonTrace as HutchinsonTrace
from ._train import TrainingDiverged as TrainingDiverged
from ._train import fit as fit
from ._train import for_inference as for_inference
from ._vector_field import MLPField as MLPField

__version__ = "0.1.0"
