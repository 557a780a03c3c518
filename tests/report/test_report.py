from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from vlsafety.report import SECTIONS, ReportData, project_2d, render_report


def _judges() -> pd.DataFrame:
    """judge_agreement rows from the job's own functions on synthetic judges."""
    from vlsafety.pipeline._judges import agreement_rows, label_rows

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    p = np.column_stack([np.clip(y * 0.6 + rng.random(200) * 0.4, 0, 1), rng.random(200)])
    d = (p >= 0.5).astype(float)
    patterns = (
        pd.DataFrame({"category": "bias", "d0": d[:, 0], "d1": d[:, 1], "e": y.astype(float)})
        .groupby(["category", "d0", "d1", "e"])
        .size()
        .reset_index(name="n")
    )
    rows = agreement_rows(patterns, ["a", "b"])
    rows += label_rows(y, p, y * 20.0, ["a", "b"], threshold=0.5)
    return pd.DataFrame(rows, columns=["group", "metric", "rater", "value"])


def _contamination_summary(n: int) -> dict[str, object]:
    """A check's summary as ``vlsafety.contamination`` writes it: 6 of n samples copy
    vlguard (4 exact images, 2 near texts), none figstep."""
    from vlsafety.contamination import KINDS

    def part(records: int, hits: dict[str, int], any_hit: int) -> dict[str, object]:
        kinds = {k: {"samples": hits.get(k, 0), "share": hits.get(k, 0) / n} for k in KINDS}
        return {"records": records, "contaminated": any_hit, "share": any_hit / n, "kinds": kinds}

    vl = part(73, {"exact_image": 4, "near_text": 2}, 6)
    return {
        "benchmark": "bench@3",
        "samples": n,
        "against": ["figstep", "vlguard"],
        "check_id": "c0ffee",
        "sources": {"figstep": part(50, {}, 0), "vlguard": vl},
        "any": vl,
        "notes": [],
    }


def _data(n: int = 60) -> ReportData:
    rng = np.random.default_rng(0)
    lb = pd.DataFrame(
        [
            {
                "model": m,
                "category": c,
                "n": 10,
                "asr": rng.random(),
                "sr": 0.5,
                "e_asr": 0.1,
                "elite_mean": 3.0,
            }
            for m in ("m1", "m2")
            for c in ("privacy", "bias", "overall", "source:figstep/Hate Speech")
        ]
    )
    return ReportData(
        title="bench@3",
        subtitle="run abc",
        leaderboard=lb,
        quality={"mad": 0.1, "mean": 0.3, "gap": 0.4, "div": 0.8},
        contamination=_contamination_summary(n),
        contamination_matches=pd.DataFrame(
            [{"sample_id": "s1", "source": "vlguard", "kind": "near_text", "similarity": 0.91}]
        ),
        category_counts=pd.DataFrame(
            {"category": ["privacy", "bias"], "benchmark": [5, 7], "pool": [50, 20]}
        ),
        source_counts=pd.DataFrame(
            {
                "source": ["figstep", "figstep", "mllmguard"],
                "source_category": ["Hate Speech", "Privacy Violation", "bias"],
                "category": ["bias", "privacy", "bias"],
                "n": [4, 3, 5],
            }
        ),
        update=pd.DataFrame(
            {
                "metric": ["MAD", "DIV"],
                "before": [0.1, 0.2],
                "after": [0.2, 0.25],
                "change": [0.1, 0.05],
            }
        ),
        update_note="bench@2 → bench@3: 20% replaced from scored@1",
        criteria=pd.DataFrame(
            {"c_sep": rng.random(n), "c_harm": rng.random(n), "c_div": rng.random(n)}
        ),
        embedding=rng.normal(size=(n, 16)),
        separability=rng.random(n),
        harmfulness=rng.random(n),
        stability=pd.DataFrame(
            [
                {"size": s, "model": m, "asr": 0.3, "lo": 0.2, "hi": 0.4, "kendall_tau": 0.9}
                for s in (10, 20)
                for m in ("m1", "m2")
            ]
        ),
        sweep=pd.DataFrame(
            [
                {"weight": w, "value": v, "mad": v, "mean": 1 - v, "gap": 0.5, "div": 0.8}
                for w in ("alpha", "beta")
                for v in (0.0, 0.5, 1.0)
            ]
        ),
        judges=_judges(),
        judges_caption="judges a, b",
    )


def test_report_has_every_section_with_embedded_pngs(tmp_path: Path) -> None:
    path = render_report(_data(), tmp_path / "r" / "report.html")
    page = path.read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert "class='empty'" not in page
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    # categories, sources, criteria, projection, stability, sweep, reliability (the rest
    # are tables)
    assert len(images) == 7
    # the public benchmark's own categories in their own table, not among ours
    own = page.split("<h3>ASR by source category</h3>")[1].split("</table>")[0]
    ours = page.split("<h3>ASR by category</h3>")[1].split("</table>")[0]
    assert "figstep/Hate Speech" in own and "figstep/Hate Speech" not in ours
    assert "bench@2 → bench@3: 20% replaced from scored@1" in page
    for b64 in images:
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert img.format == "PNG" and img.width > 100
    assert "http://" not in page and "https://" not in page  # self-contained
    judges = page.split('<section id="judges">')[1].split("</section>")[0]
    assert "fleiss_kappa" in judges and "a|b" in judges and "auc" in judges


def test_missing_parts_say_why(tmp_path: Path) -> None:
    data = ReportData(title="empty", notes={"stability": "needs ≥ 2 models"})
    page = render_report(data, tmp_path / "e.html").read_text()
    assert page.count("class='empty'") == len(SECTIONS)
    assert "needs ≥ 2 models" in page


def test_contamination_section_shows_each_source_share(tmp_path: Path) -> None:
    page = render_report(_data(), tmp_path / "c.html").read_text()
    section = page.split('<section id="contamination">')[1].split("</section>")[0]
    assert "figstep" in section and "vlguard" in section and "any source" in section
    assert "10.0%" in section  # 6 of 60 samples copy vlguard
    assert "6.7%" in section  # 4 of 60 by an exact image
    assert "near_text" in section and "0.910" in section  # the strongest match


def test_projection_shapes() -> None:
    rng = np.random.default_rng(1)
    assert project_2d(rng.normal(size=(40, 8))).shape == (40, 2)
    small = project_2d(rng.normal(size=(5, 8)))
    assert small.shape == (5, 2)
    # PCA on a line keeps the order along it
    line = np.outer(np.arange(6, dtype=float), np.ones(4))
    xy = project_2d(line)
    assert np.all(np.diff(xy[:, 0]) > 0) or np.all(np.diff(xy[:, 0]) < 0)
