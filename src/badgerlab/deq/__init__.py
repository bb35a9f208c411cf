"""Deep equilibrium models: fixed-point solvers, implicit gradients, DEQ and MDEQ layers."""

from badgerlab.deq.implicit import (
    implicit_solve,
    jacobian_frobenius,
    phantom_grad,
    saved_bytes,
    spectral_radius,
    unrolled_solve,
)
from badgerlab.deq.layers import DEQ, ContractiveLayer, DEQConfig
from badgerlab.deq.mdeq import MDEQ, MDEQCell, MDEQConfig
from badgerlab.deq.solvers import (
    SOLVERS,
    SolverStats,
    anderson,
    broyden,
    fixed_point,
    get_solver,
    register_solver,
    relative_residual,
)

__all__ = [
    "DEQ",
    "MDEQ",
    "SOLVERS",
    "ContractiveLayer",
    "DEQConfig",
    "MDEQCell",
    "MDEQConfig",
    "SolverStats",
    "anderson",
    "broyden",
    "fixed_point",
    "get_solver",
    "implicit_solve",
    "jacobian_frobenius",
    "phantom_grad",
    "register_solver",
    "relative_residual",
    "saved_bytes",
    "spectral_radius",
    "unrolled_solve",
]
