"""The dashboard at the backend's root URL: one server-rendered HTML page (no script, no build
step, inline SVG charts) of what the backend knows per project: versions over time, labels per
class, the training state and publish progress, the strategy and its regime, the prequential
learning curve and the stopping signal. It reads only what ``/status`` and the projects' histories
hold, and reloads itself every few seconds."""

from __future__ import annotations

import html
import math
import time
from typing import Sequence

from ml_backend.core.stopping import wilson

REFRESH_S = 5
WIDTH, HEIGHT, PAD = 460, 170, 34
LEFT = 44  # room left of a chart's frame for its y-axis ticks ("-0.25" at 10 px fits in 30 px)


def esc(value) -> str:
    return html.escape("—" if value is None else str(value), quote=True)


def y_ticks(lo: float, hi: float, most: int = 6) -> tuple[float, float, list[str]]:
    """A y axis that covers [lo, hi] with at most ``most`` ticks at round values (a step of 1, 2, 2.5
    or 5 times a power of ten): (axis low, axis high, the tick labels from low to high), labels
    with no more decimals than the step needs (``-0.25``, never ``-0.00654435``)."""
    span = hi - lo if hi > lo else 1.0
    for power in range(math.floor(math.log10(span)) - 1, math.floor(math.log10(span)) + 2):
        for unit in (1, 2, 2.5, 5):
            step = unit * 10.0**power
            first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
            last = max(last, first + 1)
            if last - first + 1 <= most:
                decimals = max(0, -power + (1 if unit == 2.5 else 0))
                labels = [f"{k * step:.{decimals}f}" if k else "0" for k in range(first, last + 1)]
                return first * step, last * step, labels
    return lo, hi, [f"{lo:.2g}", f"{hi:.2g}"]


def _x(i: int, n: int) -> float:
    return LEFT + (WIDTH - LEFT - PAD) * (i / max(1, n - 1) if n > 1 else 0.5)


def _y(v: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return HEIGHT - PAD + (PAD * 2 - HEIGHT) * (v - lo) / (hi - lo)


def line_chart(
    title: str,
    xs: Sequence,
    ys: Sequence[float | None],
    bands: Sequence[tuple[float, float]] | None = None,
    threshold: float | None = None,
    lo: float = 0.0,
    hi: float = 1.0,
    kind: str = "chart",
) -> str:
    """An SVG line chart over rounds (``xs`` label the x axis), with optional interval whiskers
    (``bands``) and a dashed threshold line; None values are gaps."""
    n = len(xs)
    lo, hi, ticks = y_ticks(lo, hi)
    parts = [
        f'<svg class="{kind}" role="img" aria-label="{esc(title)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}"><title>{esc(title)}</title>',
        f'<rect x="{LEFT}" y="{PAD}" width="{WIDTH - LEFT - PAD}" height="{HEIGHT - 2 * PAD}" class="frame"/>',
    ]
    for tick in ticks:
        parts.append(
            f'<text x="{LEFT - 4}" y="{_y(float(tick), lo, hi) + 4:.1f}" class="tick y-tick" '
            f'text-anchor="end">{tick}</text>'
        )
    if threshold is not None:
        y = _y(threshold, lo, hi)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - PAD}" y1="{y:.1f}" y2="{y:.1f}" class="threshold"/>')
    if n == 0:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="empty">no round yet</text>')
    for i, x in enumerate(xs):
        if n <= 12 or i % math.ceil(n / 12) == 0:
            parts.append(
                f'<text x="{_x(i, n):.1f}" y="{HEIGHT - PAD + 14}" class="tick" text-anchor="middle">{esc(x)}</text>'
            )
    if bands:
        for i, (b_lo, b_hi) in enumerate(bands):
            if not (math.isnan(b_lo) or math.isnan(b_hi)):
                parts.append(
                    f'<line x1="{_x(i, n):.1f}" x2="{_x(i, n):.1f}" y1="{_y(b_lo, lo, hi):.1f}" '
                    f'y2="{_y(b_hi, lo, hi):.1f}" class="band"/>'
                )
    points = [(i, v) for i, v in enumerate(ys) if v is not None and not math.isnan(v)]
    if len(points) > 1:
        path = " ".join(f"{_x(i, n):.1f},{_y(v, lo, hi):.1f}" for i, v in points)
        parts.append(f'<polyline points="{path}" class="line"/>')
    for i, v in points:
        parts.append(
            f'<circle cx="{_x(i, n):.1f}" cy="{_y(v, lo, hi):.1f}" r="3" class="point">'
            f"<title>{esc(xs[i])}: {v:.3f}</title></circle>"
        )
    parts.append(f'<text x="{LEFT}" y="{PAD - 10}" class="caption">{esc(title)}</text></svg>')
    return "".join(parts)


def bar_chart(title: str, counts: dict[str, int], labels: Sequence[str]) -> str:
    """Horizontal bars: labels per class (every class of the config, also those with none)."""
    rows = list(labels) or list(counts)
    height = 24 + 18 * max(1, len(rows))
    top = max([1, *counts.values()])
    parts = [
        f'<svg class="bars" role="img" aria-label="{esc(title)}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}"><title>{esc(title)}</title><text x="0" y="14" class="caption">{esc(title)}</text>'
    ]
    for i, label in enumerate(rows):
        y, n = 22 + 18 * i, counts.get(label, 0)
        w = (WIDTH - 190) * n / top
        parts.append(
            f'<text x="120" y="{y + 12}" text-anchor="end" class="tick">{esc(label[:18])}</text>'
            f'<rect x="126" y="{y}" width="{w:.1f}" height="13" class="bar"/>'
            f'<text x="{130 + w:.1f}" y="{y + 11}" class="tick" data-label="{esc(label)}">{n}</text>'
        )
    return "".join(parts) + "</svg>"


def project_section(key: str, p: dict, history: list[dict], label_studio_url: str) -> str:  # long: one HTML template
    """One project's part of the page."""
    rounds = [h.get("round") for h in history]
    agree = [h.get("prequential") or {} for h in history]
    rates = [a["agree"] / a["n"] if a.get("n") else None for a in agree]
    bands = [wilson(a.get("agree", 0), a.get("n", 0)) for a in agree]
    kappas = [h.get("kappa") for h in history]
    stopping = p.get("stopping") or {}
    per_class: dict[str, int] = history[-1].get("per_class", {}) if history else {}
    info = p.get("strategy_info") or {}
    regime = (
        f" — {esc(info['regime'])}, serving <b>{esc(info.get('serving'))}</b> "
        f"(switch at {esc(info.get('switch_at'))} labels)"
        if info.get("regime")
        else ""
    )
    state = p.get("state", "idle")
    progress = p.get("publish_progress") or {}
    publishing = ""
    if state == "publishing" and progress.get("total"):
        done = progress.get("imported", 0) or progress.get("scored", 0)
        publishing = (
            f'<p class="progress">publishing {esc(progress.get("version"))}: scored {progress.get("scored", 0)}, '
            f"imported {progress.get('imported', 0)} of {progress['total']} "
            f'<progress max="{progress["total"]}" value="{done}"></progress></p>'
        )
    published = p.get("published_version")
    served = p.get("model_version")
    queue = p.get("queue_version")
    pub_note = (
        ""
        if published == served
        else (f" (being published; Label Studio's queue still follows {queue})" if queue else " (not published yet)")
    )
    link = (
        f' · <a href="{esc(label_studio_url.rstrip("/"))}/projects/{esc(key)}/data">open in Label Studio</a>'
        if label_studio_url
        else ""
    )
    stop_class = "stable" if stopping.get("stable") else "learning"
    review = p.get("review") or []
    review_rows = "".join(
        f"<tr><td>{esc(r.get('task'))}</td><td>{esc(r.get('label'))}</td>"
        f"<td>{_num(r.get('p_label'))}</td><td>{esc(r.get('guess'))}</td><td>{_num(r.get('p_guess'))}</td></tr>"
        for r in review[:8]
    )
    table = "".join(
        f"<tr><td>{esc(h.get('round'))}</td><td><code>{esc(h.get('version'))}</code></td>"
        f"<td>{esc(time.strftime('%Y-%m-%d %H:%M', time.localtime(h['time'])) if h.get('time') else None)}</td>"
        f"<td>{esc(h.get('labels'))}</td><td>{esc(h.get('labels_changed'))}</td>"
        f"<td>{_agree(h.get('prequential'))}</td><td>{_num(h.get('kappa'))}</td>"
        f"<td>{_num(h.get('loss_last'))}</td><td>{_num(h.get('train_seconds'), 1)}</td></tr>"
        for h in reversed(history[-30:])
    )
    return f"""
<section class="project" id="project-{esc(key)}" data-project="{esc(key)}">
  <h2>Project {esc(key)}{link}</h2>
  <p class="state state-{esc(state)}">state: <b class="state-value">{esc(state)}</b> {esc(p.get("reason") or "")}
  {
        ("· trainer: " + esc(p["trainer"].get("host")) + " pid " + esc(p["trainer"].get("pid")))
        if p.get("trainer")
        else ""
    }</p>
  {publishing}
  <p>serving <code class="served">{esc(served)}</code> (round t={esc(p.get("round"))}, {
        esc(p.get("labels_used"))
    } labels);
     published <code class="published">{esc(published)}</code>{esc(pub_note)}</p>
  <p>strategy <b class="strategy">{esc(p.get("strategy"))}</b>{regime}</p>
  <p class="stopping {stop_class}">stopping signal: <b>{esc(stopping.get("message"))}</b>
     <span class="rule">({esc(stopping.get("rule"))})</span></p>
  <div class="charts">
    {
        line_chart(
            "Prequential agreement with the new labels (95% Wilson interval)",
            rounds,
            rates,
            bands,
            kind="chart prequential",
        )
    }
    {
        line_chart(
            "Cohen's κ to the previous version (fixed unlabeled sample)",
            rounds,
            kappas,
            threshold=stopping.get("threshold"),
            lo=min([0.0, *[k for k in kappas if k is not None]]),
            kind="chart kappa",
        )
    }
    {bar_chart("Labels per class (last round)", per_class, p.get("labels") or [])}
  </div>
  <h3>Versions</h3>
  <table class="versions"><tr><th>round</th><th>version</th><th>trained</th><th>labels</th><th>changed</th>
    <th>prequential agreement</th><th>κ to previous</th><th>loss</th><th>train s</th></tr>{
        table or '<tr><td colspan="9">no round yet: label a few tasks in Label Studio</td></tr>'
    }</table>
  {
        (
            '<h3>Labels to review</h3><table class="review">'
            "<tr><th>task</th><th>label</th><th>p(label)</th><th>model's guess</th><th>p(guess)</th></tr>"
            + review_rows
            + "</table>"
        )
        if review_rows
        else ""
    }
</section>"""


def _num(v, digits: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _agree(a: dict | None) -> str:
    if not a or not a.get("n"):
        return "—"
    lo, hi = wilson(a["agree"], a["n"])
    return f"{a['agree']}/{a['n']} = {a['agree'] / a['n']:.2f} [{lo:.2f}, {hi:.2f}]"


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d2330;background:#fafbfc}
h1{font-size:20px;margin:0 0 4px} h2{font-size:17px;margin:0 0 6px} h3{font-size:14px;margin:14px 0 4px}
.project{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:14px 18px;margin:16px 0}
.charts{display:flex;flex-wrap:wrap;gap:10px} svg{background:#fff}
.frame{fill:none;stroke:#c9d0da} .tick{font-size:10px;fill:#5b6472} .caption{font-size:11px;fill:#1d2330}
.line{fill:none;stroke:#2f6fde;stroke-width:2} .point{fill:#2f6fde} .band{stroke:#9dbcf2;stroke-width:6;opacity:.7}
.threshold{stroke:#d2691e;stroke-dasharray:4 3} .bar{fill:#4f9d69} .empty{fill:#8a93a0;font-size:12px}
table{border-collapse:collapse;font-size:12px} td,th{border-bottom:1px solid #eef1f5;padding:3px 8px;text-align:left}
.stopping.stable b{color:#2b8a3e} .stopping.learning b{color:#a15c00} .state-failed b{color:#c92a2a}
code{font-size:12px} .meta{color:#5b6472}
"""


def space_line(space: dict) -> str:
    """A warning when MODEL_DIR is (nearly) full: no new version can be written."""
    if not space.get("low"):
        return ""
    return f'<p class="space-low state-failed"><b>{html.escape(space["message"])}</b></p>'


def cache_line(cache: dict) -> str:
    """The frozen-feature cache: entries and size in memory and on disk, against their bounds, and
    the share of look-ups it served."""
    if not cache:
        return ""
    rate = cache.get("hit_rate")
    return (
        f'<p class="meta feature-cache">feature cache: <b class="cache-hit-rate">'
        f"{'—' if rate is None else f'{100 * rate:.1f} %'}</b> hits "
        f"({esc(cache.get('hits'))} of {esc((cache.get('hits') or 0) + (cache.get('misses') or 0))}, "
        f"{esc(cache.get('disk_hits'))} from disk) · memory {esc(cache.get('memory_items'))} tasks, "
        f"{esc(cache.get('memory_mb'))} of {esc(cache.get('memory_limit_mb'))} MB · disk "
        f"{esc(cache.get('disk_items'))} tasks, {esc(cache.get('disk_mb'))} of {esc(cache.get('disk_limit_mb'))} MB</p>"
    )


def render(metrics: dict, histories: dict[str, list[dict]], label_studio_url: str = "") -> str:
    projects = metrics.get("projects") or {}
    sections = "".join(project_section(k, p, histories.get(k, []), label_studio_url) for k, p in projects.items())
    if not sections:
        sections = (
            '<section class="project"><p>No project yet. In Label Studio: <i>Settings → Model → Connect '
            "Model</i> with this backend's URL.</p></section>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">
<title>Active Adaptation: dashboard</title><style>{STYLE}</style></head>
<body><h1>Active Adaptation for Label Studio</h1>
<p class="meta">backbone <b>{esc(metrics.get("backbone"))}</b> ({esc(metrics.get("weights"))})
 on {esc(metrics.get("device"))} · default strategy <b>{esc(metrics.get("strategy"))}</b>
 · refreshed every {REFRESH_S} s at {esc(time.strftime("%H:%M:%S"))}
 · <a href="status">/status</a> (JSON)</p>
{cache_line(metrics.get("feature_cache") or {})}{space_line(metrics.get("model_dir") or {})}
{sections}
</body></html>"""
