"""Simulation-based inference with ffjord's conditional flows: priors (`BoxUniform`,
`Independent`), `simulate`, `fit_posterior` (the plain command's defaults), a
`Posterior` kept inside the prior's support, checks that a posterior can be trusted
(`sbc`, `coverage`, `tarp`, all at once: `diagnose`), each beside its sharpness,
`pairplot`, and rounds of simulations near one observation (`sequential`).

Example:
    >>> from ffjord import sbi
    >>> sorted(name for name in sbi.__all__ if name.islower())
    ['coverage', 'diagnose', 'fit_posterior', 'pairplot', 'save_diagnostics', 'sbc',
     'sequential', 'simulate', 'tarp']
"""

from ._diagnose import diagnose as diagnose
from ._diagnose import save_diagnostics as save_diagnostics
from ._diagnostics import AbstractPosterior as AbstractPosterior
from ._diagnostics import CoverageResult as CoverageResult
from ._diagnostics import SBCResult as SBCResult
from ._diagnostics import TARPResult as TARPResult
from ._diagnostics import coverage as coverage
from ._diagnostics import sbc as sbc
from ._diagnostics import tarp as tarp
from ._fit import fit_posterior as fit_posterior
from ._fit import simulate as simulate
from ._pairplot import pairplot as pairplot
from ._posterior import Posterior as Posterior
from ._prior import AbstractPrior as AbstractPrior
from ._prior import BoxUniform as BoxUniform
from ._prior import Independent as Independent
from ._sequential import sequential as sequential

__all__ = [
    "AbstractPosterior",
    "AbstractPrior",
    "BoxUniform",
    "Independent",
    "Posterior",
    "CoverageResult",
    "SBCResult",
    "TARPResult",
    "coverage",
    "diagnose",
    "fit_posterior",
    "pairplot",
    "save_diagnostics",
    "sbc",
    "sequential",
    "simulate",
    "tarp",
]
