"""Continual-learning metrics as pure functions of the accuracy matrix.

``R`` is a ``(T + 1) x T`` array: ``R[i][j]`` is the score on task ``j`` (0-based column,
task ``j + 1`` of the stream) after training through task ``i`` (row 0: before any training,
the pre-trained model). Definitions: reference note baseline-methods.md, section 6.

Metrics that a matrix cannot define (BWT with one task, a ratio over a zero baseline) are NaN,
never a made-up number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NAN = float("nan")


def _check(R) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] + 1 or R.shape[1] < 1:
        raise ValueError(f"an accuracy matrix must have shape (T + 1, T) with T >= 1, got {R.shape}")
    return R


def final_average_accuracy(R) -> float:
    """ACC = (1/T) sum_j R[T][j]: mean score over all tasks after the last one (MTIL "Last"; the
    language-model papers' "overall performance" OP, TRACE arXiv 2310.06762)."""
    R = _check(R)
    return float(R[-1].mean())


def running_accuracy(R) -> np.ndarray:
    """ACC_t = (1/t) sum_{j<=t} R[t][j] for t = 1..T."""
    R = _check(R)
    T = R.shape[1]
    return np.array([R[t, :t].mean() for t in range(1, T + 1)])


def average_incremental_accuracy(R) -> float:
    """(1/T) sum_t ACC_t: the mean of the running accuracies (SLICE's "AP")."""
    return float(running_accuracy(R).mean())


def backward_transfer(R) -> float:
    """BWT = (1/(T-1)) sum_{j<T} (R[T][j] - R[j][j]) (GEM, arXiv 1706.08840). Negative = forgetting."""
    R = _check(R)
    T = R.shape[1]
    if T < 2:
        return NAN
    return float(np.mean([R[T, j - 1] - R[j, j - 1] for j in range(1, T)]))


def trace_backward_transfer(R) -> float:
    """TRACE's BWT = (1/T) sum_{j<=T} (R[T][j] - R[j][j]) = (T-1)/T times GEM's BWT (arXiv 2310.06762)."""
    R = _check(R)
    T = R.shape[1]
    return float(np.mean([R[T, j - 1] - R[j, j - 1] for j in range(1, T + 1)]))


def forward_transfer(R) -> float:
    """FWT = (1/(T-1)) sum_{j>=2} (R[j-1][j] - R[0][j]): the gain on a task before training on it."""
    R = _check(R)
    T = R.shape[1]
    if T < 2:
        return NAN
    return float(np.mean([R[j - 1, j - 1] - R[0, j - 1] for j in range(2, T + 1)]))


def forgetting(R) -> float:
    """Average forgetting F_T (Chaudhry et al., RWalk, arXiv 1801.10112).

    f_j = max_{l in {j..T-1}} R[l][j] - R[T][j], averaged over j < T. The max runs over the rows
    after task j was learned (the practical reading; rows before it hold pre-training scores).
    """
    R = _check(R)
    T = R.shape[1]
    if T < 2:
        return NAN
    return float(np.mean([R[j:T, j - 1].max() - R[T, j - 1] for j in range(1, T)]))


def learning_accuracy(R) -> float:
    """LA = (1/T) sum_j R[j][j]: the score on each task right after learning it (plasticity)."""
    R = _check(R)
    T = R.shape[1]
    return float(np.mean([R[j, j - 1] for j in range(1, T + 1)]))


def mtil_transfer(R) -> float:
    """MTIL Transfer (ZSCL, arXiv 2303.06628): mean over j >= 2 of mean_{i<j} R[i][j], trained rows only."""
    R = _check(R)
    T = R.shape[1]
    if T < 2:
        return NAN
    return float(np.mean([R[1:j, j - 1].mean() for j in range(2, T + 1)]))


def mtil_average(R) -> float:
    """MTIL Average: the mean over the T trained rows and all T columns."""
    R = _check(R)
    return float(R[1:].mean())


def general_retention(before: float, after: float) -> float:
    """Share of the pre-trained (general) task's score that survived: after / before (NaN if before is 0)."""
    return after / before if before > 0 else NAN


@dataclass(frozen=True)
class MetricInfo:
    key: str
    label: str
    formula: str          # plain text, for CSV files, the CLI and hover help
    cells: str
    higher_is_better: bool = True
    latex: str = ""       # the same formula in LaTeX (KaTeX), for the dashboard and the handout
    mathml: str = ""      # the same formula as a MathML Core <math> element: the handout typesets it offline


# MathML Core, written out by these few builders (browsers draw it natively, so the handout needs no script or
# font for its formulas). Each returns markup; the arguments are markup too.
def _mi(name: str) -> str:
    return f"<mi>{name}</mi>"


def _mn(number) -> str:
    return f"<mn>{number}</mn>"


def _mo(op: str) -> str:
    return f"<mo>{op}</mo>"


def _row(*parts: str) -> str:
    return f"<mrow>{''.join(parts)}</mrow>"


def _frac(num: str, den: str) -> str:
    return f"<mfrac>{num}{den}</mfrac>"


def _sub(base: str, sub: str) -> str:
    return f"<msub>{base}{sub}</msub>"


def _R(i: str, j: str) -> str:
    """R with the subscript i,j: the score on task j after training through task i."""
    return _sub(_mi("R"), _row(i, _mo(","), j))


def _sum(lo: str, hi: str) -> str:
    return f"<munderover>{_mo('∑')}{lo}{hi}</munderover>"


def _math(*parts: str) -> str:
    return f'<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">{"".join(parts)}</math>'


def _eq(name: str, *rhs: str) -> str:
    """'name = rhs…'; a name with markup (a subscript) is given as markup."""
    return _math(name if name.startswith("<") else _mi(name), _mo("="), *rhs)


def _paren(*parts: str) -> str:
    return _row(_mo("("), *parts, _mo(")"))


_T, _j, _t, _i, _l = _mi("T"), _mi("j"), _mi("t"), _mi("i"), _mi("l")
_T1 = _row(_T, _mo("−"), _mn(1))
_GT, _G0 = _sub(_mi("G"), _T), _sub(_mi("G"), _mn(0))   # the general task's score after the last task, before any


# The dashboard's metrics table, the CLI and the README all read these definitions.
METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("acc", "Final accuracy (ACC, MTIL Last, OP)", "(1/T) Σ_j R[T][j]", "the last row",
               latex=r"\mathrm{ACC} = \frac{1}{T}\sum_{j=1}^{T} R_{T,j}",
               mathml=_eq("ACC", _frac(_mn(1), _T), _sum(_row(_j, _mo("="), _mn(1)), _T), _R(_T, _j))),
    MetricInfo("aia", "Average incremental accuracy (AP)", "(1/T) Σ_t (1/t) Σ_{j≤t} R[t][j]",
               "the lower triangle, row by row",
               latex=r"\mathrm{AP} = \frac{1}{T}\sum_{t=1}^{T} \frac{1}{t}\sum_{j=1}^{t} R_{t,j}",
               mathml=_eq("AP", _frac(_mn(1), _T), _sum(_row(_t, _mo("="), _mn(1)), _T), _frac(_mn(1), _t),
                               _sum(_row(_j, _mo("="), _mn(1)), _t), _R(_t, _j))),
    MetricInfo("bwt", "Backward transfer (BWT)", "(1/(T-1)) Σ_{j<T} (R[T][j] − R[j][j])",
               "last row against the diagonal",
               latex=r"\mathrm{BWT} = \frac{1}{T-1}\sum_{j=1}^{T-1} \left(R_{T,j} - R_{j,j}\right)",
               mathml=_eq("BWT", _frac(_mn(1), _T1), _sum(_row(_j, _mo("="), _mn(1)), _T1),
                               _paren(_R(_T, _j), _mo("−"), _R(_j, _j)))),
    MetricInfo("trace_bwt", "BWT as TRACE normalises it", "(1/T) Σ_j (R[T][j] − R[j][j])",
               "last row against the diagonal",
               latex=r"\mathrm{BWT}_{\mathrm{TRACE}} = \frac{1}{T}\sum_{j=1}^{T} \left(R_{T,j} - R_{j,j}\right)",
               mathml=_eq(_sub(_mi("BWT"), _mi("TRACE")), _frac(_mn(1), _T), _sum(_row(_j, _mo("="), _mn(1)), _T),
                               _paren(_R(_T, _j), _mo("−"), _R(_j, _j)))),
    MetricInfo("fwt", "Forward transfer (FWT)", "(1/(T-1)) Σ_{j≥2} (R[j−1][j] − R[0][j])",
               "the superdiagonal against row 0",
               latex=r"\mathrm{FWT} = \frac{1}{T-1}\sum_{j=2}^{T} \left(R_{j-1,j} - R_{0,j}\right)",
               mathml=_eq("FWT", _frac(_mn(1), _T1), _sum(_row(_j, _mo("="), _mn(2)), _T),
                               _paren(_R(_row(_j, _mo("−"), _mn(1)), _j), _mo("−"), _R(_mn(0), _j)))),
    MetricInfo("forgetting", "Forgetting (Chaudhry)", "(1/(T-1)) Σ_{j<T} (max_{j≤l<T} R[l][j] − R[T][j])",
               "each column's best trained score against the last row", higher_is_better=False,
               latex=r"F = \frac{1}{T-1}\sum_{j=1}^{T-1} \left(\max_{j \le l < T} R_{l,j} - R_{T,j}\right)",
               mathml=_eq("F", _frac(_mn(1), _T1), _sum(_row(_j, _mo("="), _mn(1)), _T1),
                               _paren(f"<munder>{_mo('max')}{_row(_j, _mo('≤'), _l, _mo('&lt;'), _T)}</munder>",
                                      _R(_l, _j), _mo("−"), _R(_T, _j)))),
    MetricInfo("la", "Learning accuracy (plasticity)", "(1/T) Σ_j R[j][j]", "the diagonal",
               latex=r"\mathrm{LA} = \frac{1}{T}\sum_{j=1}^{T} R_{j,j}",
               mathml=_eq("LA", _frac(_mn(1), _T), _sum(_row(_j, _mo("="), _mn(1)), _T), _R(_j, _j))),
    MetricInfo("mtil_transfer", "MTIL Transfer", "mean_{j≥2} mean_{1≤i<j} R[i][j]",
               "trained rows above the diagonal",
               latex=r"\mathrm{Transfer} = \frac{1}{T-1}\sum_{j=2}^{T} \frac{1}{j-1}\sum_{i=1}^{j-1} R_{i,j}",
               mathml=_eq("Transfer", _frac(_mn(1), _T1), _sum(_row(_j, _mo("="), _mn(2)), _T),
                               _frac(_mn(1), _row(_j, _mo("−"), _mn(1))),
                               _sum(_row(_i, _mo("="), _mn(1)), _row(_j, _mo("−"), _mn(1))), _R(_i, _j))),
    MetricInfo("mtil_average", "MTIL Average", "mean_{1≤i≤T, j} R[i][j]", "all trained rows",
               latex=r"\mathrm{Average} = \frac{1}{T^2}\sum_{i=1}^{T}\sum_{j=1}^{T} R_{i,j}",
               mathml=_eq("Average", _frac(_mn(1), f"<msup>{_T}{_mn(2)}</msup>"),
                               _sum(_row(_i, _mo("="), _mn(1)), _T), _sum(_row(_j, _mo("="), _mn(1)), _T), _R(_i, _j))),
    MetricInfo("general", "General-task score after the last task", "G[T]", "general column, last row",
               latex=r"G_T",
               mathml=_math(_GT)),
    MetricInfo("general_retention", "General-task retention", "G[T] / G[0]",
               "general column: last row against row 0", latex=r"\frac{G_T}{G_0}",
               mathml=_math(_frac(_GT, _G0))),
    MetricInfo("general_delta", "General-task change", "G[T] − G[0]",
               "general column: last row against row 0", latex=r"G_T - G_0",
               mathml=_math(_GT, _mo("−"), _G0)),
)


def per_general_task(general: dict[str, list[float]] | None) -> dict[str, float]:
    """Each general task's own final score and retention, as flat keys ``general:<name>`` and
    ``general_retention:<name>`` (a language stream has several general columns: the pre-training
    skills and the in-context score; their mean alone hides which one eroded)."""
    out = {}
    for name, col in (general or {}).items():
        out[f"general:{name}"] = float(col[-1])
        out[f"general_retention:{name}"] = general_retention(col[0], col[-1])
    return out


def summarize(R, general: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Every metric of METRICS for a matrix R and the general tasks' columns (rows 0..T).

    With several general tasks, `general*` metrics are their means; `per_general_task` adds each
    one's own score and retention.
    """
    out = {
        "acc": final_average_accuracy(R),
        "aia": average_incremental_accuracy(R),
        "bwt": backward_transfer(R),
        "trace_bwt": trace_backward_transfer(R),
        "fwt": forward_transfer(R),
        "forgetting": forgetting(R),
        "la": learning_accuracy(R),
        "mtil_transfer": mtil_transfer(R),
        "mtil_average": mtil_average(R),
    }
    cols = list((general or {}).values())
    if cols:
        out["general"] = float(np.mean([c[-1] for c in cols]))
        out["general_retention"] = float(np.mean([general_retention(c[0], c[-1]) for c in cols]))
        out["general_delta"] = float(np.mean([c[-1] - c[0] for c in cols]))
        out.update(per_general_task(general))
    else:
        out["general"] = out["general_retention"] = out["general_delta"] = NAN
    return out


def after_each_task(R, general: dict[str, list[float]] | None = None) -> list[dict[str, float]]:
    """`summarize` of the stream as it stood at each task's end: entry t - 1 holds the metrics of the first t
    tasks (rows 0..t and columns 1..t of R, rows 0..t of the general columns), as if the stream had ended
    there. R may hold fewer rows than T + 1 (a run still going): one entry per finished task. The last entry
    of a finished run's list is summarize(R, general)."""
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or not 1 <= R.shape[0] <= R.shape[1] + 1:
        raise ValueError(f"an accuracy matrix so far must have shape (t + 1, T) with t <= T, got {R.shape}")
    return [summarize(R[:t + 1, :t], {name: list(col[:t + 1]) for name, col in (general or {}).items()})
            for t in range(1, R.shape[0])]


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
