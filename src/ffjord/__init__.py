"""Continuous normalizing flows (FFJORD) in JAX."""

from ._bijector import AbstractBijector as AbstractBijector
from ._bijector import Affine as Affine
from ._bijector import Chain as Chain
from ._bijector import ContextMap as ContextMap
from ._bijector import Mode as Mode
from ._bijector import ProjectedContext as ProjectedContext
from ._bijector import SolveStats as SolveStats
from ._bijector import StandardizedContext as StandardizedContext
from ._bijector import UnitInterval as UnitInterval
from ._distributions import MultivariateNormalDiag as MultivariateNormalDiag
from ._distributions import TransformedDistribution as TransformedDistribution
from ._embedding import AbstractEmbedding as AbstractEmbedding
from ._embedding import Conv1dEmbedding as Conv1dEmbedding
from ._embedding import EmbeddedContext as EmbeddedContext
from ._embedding import MLPEmbedding as MLPEmbedding
from ._embedding import SetEmbedding as SetEmbedding
from ._errors import InputError as InputError
from ._ffjord import FFJORD as FFJORD
from ._objectives import AbstractObjective as AbstractObjective
from ._objectives import FlowMatching as FlowMatching
from ._objectives import MaximumLikelihood as MaximumLikelihood
from ._plan import train as train
from ._run import load as load
from ._sampling import OutsideBox as OutsideBox
from ._sampling import sample_within as sample_within
from ._trace import AbstractTrace as AbstractTrace
from ._trace import ExactTrace as ExactTrace
from ._trace import HutchinsonTrace as HutchinsonTrace
from ._train import Training as Training
from ._train import fit as fit
from ._train import fit_to_density as fit_to_density
from ._trainer import TrainingDiverged as TrainingDiverged
from ._trainer import for_inference as for_inference
from ._vector_field import AbstractVectorField as AbstractVectorField
from ._vector_field import CallableField as CallableField
from ._vector_field import MLPField as MLPField
from ._version import __version__ as __version__

__all__ = [
    "AbstractBijector",
    "AbstractEmbedding",
    "AbstractObjective",
    "AbstractTrace",
    "AbstractVectorField",
    "Affine",
    "CallableField",
    "Chain",
    "ContextMap",
    "Conv1dEmbedding",
    "EmbeddedContext",
    "ExactTrace",
    "FFJORD",
    "FlowMatching",
    "HutchinsonTrace",
    "InputError",
    "MLPEmbedding",
    "MLPField",
    "MaximumLikelihood",
    "Mode",
    "MultivariateNormalDiag",
    "OutsideBox",
    "ProjectedContext",
    "SetEmbedding",
    "SolveStats",
    "StandardizedContext",
    "Training",
    "TrainingDiverged",
    "TransformedDistribution",
    "UnitInterval",
    "fit",
    "fit_to_density",
    "for_inference",
    "load",
    "sample_within",
    "train",
]
