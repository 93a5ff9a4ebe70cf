"""Exported graph vs its PyTorch module on the same inputs: the export's parity report.

Default fp32 tolerance per output: max |got - ref| <= 1e-4 * max|ref| + 1e-5, and for mask
logits the signs (the masks) must agree on >= 99.9 % of the pixels. An export that misses
either fails loudly, naming the graph and the output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from medsam3_rt import graph_contract as gc
from medsam3_rt.errors import ParityError

MASK_LOGIT_OUTPUTS = frozenset({gc.PRED_MASKS, gc.SEMANTIC_SEG, gc.LOW_RES_MASKS, gc.HIGH_RES_MASKS})


@dataclass(frozen=True)
class Tolerance:
    rel: float = 1e-4
    abs: float = 1e-5
    sign_agreement: float = 0.999

    def describe(self) -> str:
        return f"max|delta| <= {self.rel:g}*max|ref| + {self.abs:g}; mask-logit signs agree on >= {100 * self.sign_agreement:g}% of pixels"


@dataclass(frozen=True)
class OutputParity:
    graph: str
    output: str
    max_abs: float
    max_ref: float
    max_rel: float
    bound: float
    sign_agreement: float | None
    passed: bool
    reference: str | None = None  # set where a graph is compared with more than one reference

    def describe(self) -> str:
        signs = f", mask signs agree {100 * self.sign_agreement:.3f}%" if self.sign_agreement is not None else ""
        vs = f" vs {self.reference}" if self.reference else ""
        return f"{self.graph}.{self.output}{vs}: max|delta| {self.max_abs:.2e} (bound {self.bound:.2e}, rel {self.max_rel:.1e}){signs}"


def compare(
    graph: str, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], tol: Tolerance, reference: str | None = None
) -> list[OutputParity]:
    results = []
    for name, r in ref.items():
        g = np.asarray(got[name], dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if g.shape != r.shape:
            raise ParityError(f"{graph}.{name}: exported graph returns shape {list(g.shape)}, {reference or 'PyTorch'} {list(r.shape)}")
        max_abs = float(np.max(np.abs(g - r))) if r.size else 0.0
        max_ref = float(np.max(np.abs(r))) if r.size else 0.0
        bound = tol.rel * max_ref + tol.abs
        signs = float(np.mean((g > 0) == (r > 0))) if name in MASK_LOGIT_OUTPUTS and r.size else None
        ok = bool(np.isfinite(g).all()) and max_abs <= bound and (signs is None or signs >= tol.sign_agreement)
        results.append(OutputParity(graph, name, max_abs, max_ref, max_abs / max(max_ref, 1e-30), bound, signs, ok, reference))
    return results


def check(results: Iterable[OutputParity]) -> None:
    failed = [r for r in results if not r.passed]
    if failed:
        raise ParityError("export parity failed: " + "; ".join(r.describe() for r in failed))


def report(results: Iterable[OutputParity], tol: Tolerance, reference: str, per_graph: Mapping[str, str] | None = None) -> dict:
    """The parity report: `reference` names what the graphs were compared with (per graph in
    `references`, and on every row), so a reader knows whether it is transformers or Meta's code."""
    per_graph = dict(per_graph or {})
    rows = [{**asdict(r), "reference": r.reference or per_graph.get(r.graph, reference)} for r in results]
    return {
        "reference": reference,
        "references": per_graph,
        "tolerance": tol.describe(),
        "passed": all(r["passed"] for r in rows),
        "outputs": rows,
    }
