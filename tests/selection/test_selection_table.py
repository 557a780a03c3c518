"""The Arrow adapter behind ``vlsafety select``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlsafety.selection import OUTPUT_COLUMNS, greedy_select, select_table, separability


def _table(n: int = 60, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "sample_id": [f"s{i}" for i in range(n)],
            "category": rng.choice(["bias", "privacy", "toxicity"], n).tolist(),
            "embedding": [rng.normal(size=6).astype(np.float32).tolist() for _ in range(n)],
            "harmful": [(rng.random(4) < 0.5).tolist() for _ in range(n)],
            "judge_probs": [rng.random(6).tolist() for _ in range(n)],
            "elite_scores": [(rng.random(3) * 25).tolist() for _ in range(n)],
            "text": [f"question {i}" for i in range(n)],
        }
    )


def _replace(table: pa.Table, name: str, values: list) -> pa.Table:
    i = table.column_names.index(name)
    return table.set_column(i, name, pa.array(values, type=table.schema.field(name).type))


def test_greedy_mode_selects_like_greedy_select() -> None:
    table = _table()
    selected, summary = select_table(table, n_max=12, device="numpy")
    assert selected.column_names == table.column_names + list(OUTPUT_COLUMNS)
    assert selected.column("rank").to_pylist() == list(range(1, 13))
    # Same picks as the array API on the same inputs.
    names = ["bias", "privacy", "toxicity"]
    cat = np.array([names.index(c) for c in table.column("category").to_pylist()])
    p_h = np.array([np.mean(x) for x in table.column("harmful").to_pylist()])
    harm = np.array([np.mean(x) for x in table.column("judge_probs").to_pylist()])
    emb = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    ref = greedy_select(separability(p_h), harm, cat, emb, n_categories=3, n_max=12, device="numpy")
    expected_ids = [f"s{i}" for i in ref.indices.tolist()]
    assert selected.column("sample_id").to_pylist() == expected_ids
    np.testing.assert_array_equal(selected.column("score").to_numpy(), ref.score)
    np.testing.assert_array_equal(selected.column("c_div").to_numpy(), ref.c_div)
    assert summary["n_selected"] == 12 and summary["n_rejected"] == 0
    assert summary["n_not_selected"] == 48
    assert summary["category_names"] == names and summary["n_categories"] == 3
    assert summary["metrics"]["div"] == pytest.approx(ref.c_div.mean())
    assert set(summary["metrics"]["panel"]) == {"mad", "mean", "gap"}
    assert sum(summary["per_category"].values()) == 12
    assert summary["inputs"]["p_h"].startswith("harmful")


def test_scalar_columns_win_and_are_reported() -> None:
    table = _table()
    table = table.append_column("p_h", pa.array(np.linspace(0, 1, 60)))
    table = table.append_column("harm", pa.array(np.full(60, 0.5)))
    selected, summary = select_table(table, n_max=5, device="numpy")
    assert summary["inputs"] == {"p_h": "p_h", "harm": "harm"}
    np.testing.assert_allclose(selected.column("c_harm").to_numpy(), 0.5)


def test_bad_rows_become_rejects_and_counts_add_up() -> None:
    table = _table(20)
    emb = table.column("embedding").to_pylist()
    emb[0] = None
    emb[1] = [0.0] * 6
    emb[2] = [1.0] * 5
    emb[3] = [float("nan")] + [1.0] * 5
    table = _replace(table, "embedding", emb)
    harmful = table.column("harmful").to_pylist()
    harmful[4] = None
    harmful[5] = [True, False]
    table = _replace(table, "harmful", harmful)
    probs = table.column("judge_probs").to_pylist()
    probs[6] = [1.5] + [0.1] * 5
    table = _replace(table, "judge_probs", probs)
    cats = table.column("category").to_pylist()
    cats[7] = "weapons"
    table = _replace(table, "category", cats)
    ids = table.column("sample_id").to_pylist()
    ids[8] = "s9"
    table = _replace(table, "sample_id", ids)
    selected, summary = select_table(
        table, n_max=50, category_names=["bias", "privacy", "toxicity"], device="numpy"
    )
    reasons = {r["sample_id"]: r["reason"] for r in summary["rejects"]}
    assert reasons == {
        "s0": "missing_embedding",
        "s1": "zero_embedding",
        "s2": "bad_embedding_dim",
        "s3": "nonfinite_embedding",
        "s4": "missing_harmful",
        "s5": "bad_harmful_size",
        "s6": "invalid_judge_probs",
        "s7": "unknown_category",
        "s9": "duplicate_sample_id",
    }
    assert all(r["detail"] for r in summary["rejects"])
    assert summary["n_selected"] == 11 == selected.num_rows
    assert (
        summary["n_input"]
        == summary["n_selected"] + summary["n_not_selected"] + summary["n_rejected"]
    )
    assert not set(selected.column("sample_id").to_pylist()) & set(reasons) - {"s9"}


def test_elite_filter_mode() -> None:
    table = _table(40)
    selected, summary = select_table(table, n_max=5, mode="elite-filter", per_category_cap=4)
    scores = np.array(table.column("elite_scores").to_pylist())
    combined = scores.sum(axis=1)
    got = selected.column("score").to_numpy()
    assert np.all(np.diff(got) <= 0) and selected.num_rows <= 5
    ids = [int(s[1:]) for s in selected.column("sample_id").to_pylist()]
    np.testing.assert_allclose(got, combined[ids])
    assert all((scores[i] >= 10).sum() >= 2 for i in ids)
    assert selected.column("c_div").null_count == selected.num_rows
    counts = summary["reject_counts"]
    assert set(counts) <= {"below_threshold", "category_cap", "n_max"}
    assert (
        summary["n_input"]
        == summary["n_selected"] + summary["n_not_selected"] + summary["n_rejected"]
    )
    assert summary["n_not_selected"] == 0  # every unselected pair has a reason


@pytest.mark.parametrize(
    ("drop", "kwargs", "match"),
    [
        (["embedding"], {}, "missing column.*embedding"),
        (["harmful"], {}, "'p_h' column or a 'harmful'"),
        (["judge_probs"], {}, "'harm' column or a 'judge_probs'"),
        (["elite_scores"], {"mode": "elite-filter"}, "elite_scores"),
        (["sample_id"], {}, "sample_id"),
        ([], {"mode": "best"}, "mode"),
        ([], {"n_max": 0}, "n_max"),
        ([], {"category_names": ["bias", "privacy", "toxicity"], "n_categories": 4}, "contradicts"),
        ([], {"n_categories": 2}, "n_categories=2"),
    ],
)
def test_bad_tables_raise_errors_naming_the_problem(
    drop: list[str], kwargs: dict, match: str
) -> None:
    table = _table(10).drop_columns(drop)
    with pytest.raises(ValueError, match=match):
        select_table(table, **{"n_max": 3, **kwargs})


def test_type_errors_name_the_column() -> None:
    table = (
        _replace(_table(5), "category", ["a"] * 5)
        .drop_columns(["embedding"])
        .append_column("embedding", pa.array(["x"] * 5))
    )
    with pytest.raises(ValueError, match="column 'embedding': expected a list column"):
        select_table(table, n_max=2)
    with pytest.raises(ValueError, match="already has output column"):
        select_table(_table(5).append_column("score", pa.array([1.0] * 5)), n_max=2)


def test_k_from_taxonomy_names_larger_than_present() -> None:
    selected, summary = select_table(
        _table(30),
        n_max=6,
        category_names=["bias", "privacy", "toxicity", "legality"],
        device="numpy",
    )
    assert summary["n_categories"] == 4 and selected.num_rows == 6


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 39), max_size=6, unique=True),
    bad=st.lists(
        st.tuples(st.integers(0, 39), st.sampled_from(["null", "zero", "short", "nan"])),
        max_size=6,
    ),
)
def test_chunked_embeddings_select_as_one_chunk_does(
    cuts: list[int], bad: list[tuple[int, str]]
) -> None:
    """The embedding column is read chunk by chunk into one quantized matrix (no combined
    copy): however Arrow chunks the table (Spark's toArrow gives one chunk per batch), and
    wherever the bad rows fall, the picks, scores and rejects are the single-chunk ones."""
    table = _table(40, seed=3)
    emb = table.column("embedding").to_pylist()
    for i, kind in bad:
        emb[i] = {"null": None, "zero": [0.0] * 6, "short": [1.0] * 5, "nan": [np.nan] * 6}[kind]
    table = _replace(table, "embedding", emb)
    bounds = [0, *sorted(cuts), 40]
    chunked = pa.concat_tables(
        [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    )
    assert chunked.column("embedding").num_chunks == len(bounds) - 1
    one, one_summary = select_table(table.combine_chunks(), n_max=10, device="numpy")
    many, many_summary = select_table(chunked, n_max=10, device="numpy")
    assert many.column("sample_id").to_pylist() == one.column("sample_id").to_pylist()
    assert many.equals(one)  # every column of every picked row, in rank order
    np.testing.assert_array_equal(many.column("score").to_numpy(), one.column("score").to_numpy())
    assert many_summary["rejects"] == one_summary["rejects"]
    # and the single-chunk path is greedy_select on the raw matrix of the usable rows
    rejected = {r["sample_id"] for r in one_summary["rejects"]}
    keep = [i for i in range(40) if f"s{i}" not in rejected]
    cats = table.column("category").to_pylist()
    names = sorted(set(cats))  # K counts every category present, as select_table does
    ref = greedy_select(
        separability(np.array([np.mean(table.column("harmful")[i].as_py()) for i in keep])),
        np.array([np.mean(table.column("judge_probs")[i].as_py()) for i in keep]),
        np.array([names.index(cats[i]) for i in keep]),
        np.array([emb[i] for i in keep], dtype=np.float32),
        n_categories=len(names),
        n_max=min(10, len(keep)),
        device="numpy",
    )
    assert one.column("sample_id").to_pylist() == [f"s{keep[j]}" for j in ref.indices.tolist()]


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 41),
    short_head=st.integers(0, 12),
    bad=st.lists(
        st.tuples(st.integers(0, 39), st.sampled_from(["null", "zero", "short", "nan"])),
        max_size=6,
    ),
    mode=st.sampled_from(["greedy", "elite-filter"]),
)
def test_streamed_embeddings_select_as_the_in_table_column_does(
    batch: int, short_head: int, bad: list[tuple[int, str]], mode: str
) -> None:
    """The embeddings kept out of the table (a parquet dataset read batch by batch, the
    selected rows read back by index) give the same picks, scores, rejects and output rows
    as the column inside the table — also when the first batch's rows have an atypical
    length (``short_head`` rows of 5 dims: the width is re-read from the whole column)."""
    import tempfile

    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from vlsafety.selection import DatasetColumn

    table = _table(40, seed=5)
    emb = table.column("embedding").to_pylist()
    for i in range(short_head):
        emb[i] = [1.0 + i] * 5
    for i, kind in bad:
        emb[i] = {"null": None, "zero": [0.0] * 6, "short": [1.0] * 5, "nan": [np.nan] * 6}[kind]
    table = _replace(table, "embedding", emb)
    n_max = 10 if mode == "greedy" else None
    inside, inside_summary = select_table(table, n_max=n_max, mode=mode, device="numpy")
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(table, f"{tmp}/t.parquet", row_group_size=7)
        dataset = ds.dataset(f"{tmp}/t.parquet", format="parquet")
        rest = [c for c in table.column_names if c != "embedding"]
        streamed, streamed_summary = select_table(
            dataset.to_table(columns=rest),
            n_max=n_max,
            mode=mode,
            device="numpy",
            embeddings=DatasetColumn(dataset, "embedding", batch_size=batch),
        )
    assert streamed.column_names == [*rest, "embedding", *OUTPUT_COLUMNS]
    # repr: a NaN embedding (kept by the ELITE filter) equals itself
    assert repr(streamed.select(inside.column_names).to_pylist()) == repr(inside.to_pylist())
    assert streamed_summary["rejects"] == inside_summary["rejects"]


def test_compacting_the_matrix_in_place_equals_fancy_indexing() -> None:
    from vlsafety.selection._table import _compact_rows

    rng = np.random.default_rng(0)
    q = rng.normal(size=(10_000, 3)).astype(np.float32)
    keep = np.flatnonzero(rng.random(10_000) < 0.7)
    want = q[keep].copy()
    got = _compact_rows(q, keep)
    assert np.shares_memory(got, q)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=20, deadline=None)
@given(keep=st.lists(st.booleans(), min_size=30, max_size=30), batch=st.integers(1, 31))
def test_a_row_subset_streams_and_takes_the_kept_rows(keep: list[bool], batch: int) -> None:
    """RowSubset: the column of a filtered table, batch by batch and by position."""
    import tempfile

    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from vlsafety.selection import DatasetColumn, RowSubset

    table = _table(30, seed=7)
    mask = np.array(keep)
    kept = np.flatnonzero(mask)
    want = table.filter(pa.array(mask)).column("embedding").to_pylist()
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(table, f"{tmp}/t.parquet", row_group_size=4)
        source = DatasetColumn(ds.dataset(f"{tmp}/t.parquet"), "embedding", batch_size=batch)
        subset = RowSubset(source, kept)
        streamed = [v for chunk in subset.batches() for v in chunk.to_pylist()]
        order = np.arange(kept.size)[::-1].copy()
        taken = subset.take(order).to_pylist()
    assert streamed == want
    assert taken == [want[i] for i in order.tolist()]
