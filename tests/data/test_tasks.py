"""Task loading, normalisation, splitting and split files (promptgrid.data)."""
import os

# datasets reads these at import: the tests never touch the network.
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from promptgrid.config import TaskConfig
from promptgrid.config.study import default_cache_dir
from promptgrid.data import DataError
from promptgrid.data.artifacts import SourceUnavailable, fetch_artifact
from promptgrid.data.readers import read_local
from promptgrid.data.sources.bigbench import ARTIFACT, bigbench_index, bigbench_records, extract_bigbench_task
from promptgrid.data.splits import load_split, normalise, prepare_task, split_examples, split_hash, write_splits
from promptgrid.registry import SOURCES
from promptgrid.storage.files import read_table_meta, write_table

FIX = Path(__file__).parents[1] / "fixtures" / "data"
LABELS = {"0": "negative", "1": "neutral", "2": "positive"}
# reviews.jsonl ids under task name "reviews" with dev_fraction = test_fraction = 0.25, in hash order
TRAIN = ["r09", "r03", "r05", "r19", "r08", "r17", "r11", "r13", "r07", "r23"]
DEV = ["r10", "r18", "r21", "r04", "r16", "r15", "r12", "r01", "r14"]
TEST = ["r06", "r20", "r24", "r22", "r02"]


def reviews(path=FIX / "reviews.jsonl", **kw) -> TaskConfig:
    args = dict(source="local", path=str(path), labels=LABELS, text_fields=["title", "body"], label_field="rating",
                id_field="id", dev_fraction=0.25, test_fraction=0.25)
    args.update(kw)
    return TaskConfig(**args)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def raw_rows():
    return [json.loads(line) for line in (FIX / "reviews.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- normalisation and label mapping
def test_normalise_jsonl_schema_and_text():
    df = normalise(read_local(FIX / "reviews.jsonl"), reviews(), "reviews.jsonl")
    assert list(df.columns) == ["id", "text", "label", "label_text"]
    assert str(df["label"].dtype) == "int64"
    assert len(df) == 24
    first = df.iloc[0]
    assert (first["id"], first["label"], first["label_text"]) == ("r01", 0, "negative")
    assert first["text"] == "Broke in a week\nThe handle snapped after seven days of light use."
    assert df.set_index("id").loc["r03", "label_text"] == "positive"
    assert Counter(df["label_text"]) == {"negative": 8, "neutral": 8, "positive": 8}


def test_label_index_follows_config_order():
    task = reviews(labels={"2": "positive", "1": "neutral", "0": "negative"})
    df = normalise(read_local(FIX / "reviews.jsonl"), task, "reviews.jsonl").set_index("id")
    assert df.loc["r03", ["label", "label_text"]].tolist() == [0, "positive"]
    assert df.loc["r02", ["label", "label_text"]].tolist() == [1, "neutral"]
    assert df.loc["r01", ["label", "label_text"]].tolist() == [2, "negative"]


def test_integral_floats_and_booleans_match_string_keys():
    raw = pd.DataFrame({"input": ["a", "b", "c"], "label": [1.0, 0.0, 1.0], "flag": [True, False, True]})
    df = normalise(raw, TaskConfig(source="local", path="x.parquet", labels={"0": "no", "1": "yes"}), "x.parquet")
    assert df["label"].tolist() == [1, 0, 1] and df["id"].tolist() == ["0", "1", "2"]
    task = TaskConfig(source="local", path="x.parquet", labels={True: "on", False: "off"}, label_field="flag")
    assert normalise(raw, task, "x.parquet")["label_text"].tolist() == ["on", "off", "on"]


def test_local_formats_agree(tmp_path):
    want = normalise(read_local(FIX / "reviews.jsonl"), reviews(), "jsonl")
    jsonl = pd.DataFrame(raw_rows())
    jsonl.to_parquet(tmp_path / "r.parquet")
    pd.read_csv(FIX / "reviews.csv", dtype=str).to_csv(tmp_path / "r.tsv", sep="\t", index=False)
    (tmp_path / "r.json").write_text(json.dumps({"examples": raw_rows()}))
    for path in (FIX / "reviews.csv", tmp_path / "r.tsv", tmp_path / "r.parquet", tmp_path / "r.json"):
        got = normalise(read_local(path), reviews(path), str(path))
        pd.testing.assert_frame_equal(got, want, obj=str(path))


# ---------------------------------------------------------------- splitting
def expected_hash(name, i):
    return (int(hashlib.sha256(f"{name}:{i}".encode()).hexdigest()[:16], 16) >> 11) / 2 ** 53


def test_split_is_the_documented_hash_split(tmp_path):
    splits = prepare_task(reviews(), "reviews", tmp_path)
    assert [splits[s]["id"].tolist() for s in ("train", "dev", "test")] == [TRAIN, DEV, TEST]
    for split, ids in (("train", TRAIN), ("dev", DEV), ("test", TEST)):
        h = [expected_hash("reviews", i) for i in ids]
        assert h == sorted(h)
        lo, hi = {"test": (0, 0.25), "dev": (0.25, 0.5), "train": (0.5, 1)}[split]
        assert all(lo <= x < hi for x in h), split
    assert split_hash("reviews", ["r06"])[0] == pytest.approx(expected_hash("reviews", "r06"), abs=0)
    assert splits["test"]["label"].tolist() == [2, 1, 2, 0, 1]


def test_split_is_deterministic_and_independent_of_row_order(tmp_path):
    a = prepare_task(reviews(), "reviews", tmp_path)
    rows = raw_rows()
    reordered = rows[7:] + rows[6::-1]
    assert sorted(r["id"] for r in reordered) == [r["id"] for r in rows] and reordered != rows
    shuffled = write_jsonl(tmp_path / "shuffled.jsonl", reordered)
    b = prepare_task(reviews(shuffled), "reviews", tmp_path)
    for split in ("train", "dev", "test"):
        pd.testing.assert_frame_equal(a[split], b[split])
    other = prepare_task(reviews(), "reviews_v2", tmp_path)
    assert other["test"]["id"].tolist() != TEST  # the task name salts the hash


def test_caps_keep_the_lowest_hashes(tmp_path):
    splits = prepare_task(reviews(max_train=3, max_dev=2, max_test=1), "reviews", tmp_path)
    assert splits["train"]["id"].tolist() == TRAIN[:3]
    assert splits["dev"]["id"].tolist() == DEV[:2]
    assert splits["test"]["id"].tolist() == TEST[:1]


def test_row_numbers_are_ids_without_id_field(tmp_path):
    splits = prepare_task(reviews(id_field=None), "reviews", tmp_path)
    ids = sorted(int(i) for s in splits.values() for i in s["id"])
    assert ids == list(range(24))


# ---------------------------------------------------------------- data errors
def test_label_outside_verbalizer_names_file_row_value_and_labels(tmp_path):
    rows = raw_rows()
    rows[2]["rating"] = 5
    path = write_jsonl(tmp_path / "bad_label.jsonl", rows)
    with pytest.raises(DataError) as err:
        prepare_task(reviews(path), "reviews", tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "row 3" in msg and "'r03'" in msg and "label 5" in msg
    assert "['0', '1', '2']" in msg and "'rating'" in msg


def test_missing_column_names_column_file_and_present_columns(tmp_path):
    with pytest.raises(DataError) as err:
        prepare_task(reviews(text_fields=["title", "review"]), "reviews", tmp_path)
    msg = str(err.value)
    assert "column 'review' is missing" in msg and "reviews.jsonl" in msg
    assert "['id', 'title', 'body', 'rating']" in msg


def test_empty_text_names_row(tmp_path):
    rows = raw_rows()
    rows[1].update(title="", body="   ")
    path = write_jsonl(tmp_path / "blank.jsonl", rows)
    with pytest.raises(DataError, match=r"blank\.jsonl row 2 \(id 'r02'\): empty text in \['title', 'body'\]"):
        prepare_task(reviews(path, empty_text="error"), "reviews", tmp_path)


def test_empty_text_rows_are_dropped_by_default(tmp_path, capsys):
    rows = raw_rows()
    rows[1].update(title="", body="   ")
    path = write_jsonl(tmp_path / "blank.jsonl", rows)
    splits = prepare_task(reviews(path), "reviews", tmp_path)
    ids = [i for df in splits.values() for i in df["id"]]
    assert "r02" not in ids and len(ids) == len(rows) - 1
    assert "dropping 1 rows with empty text" in capsys.readouterr().err


def test_missing_text_field_value_is_empty_text(tmp_path):
    path = write_jsonl(tmp_path / "none.jsonl", [{"id": "a", "input": "x", "label": 0},
                                                 {"id": "b", "input": None, "label": 1}])
    task = TaskConfig(source="local", path=str(path), labels={"0": "n", "1": "y"}, id_field="id", empty_text="error")
    with pytest.raises(DataError, match=r"none\.jsonl row 2 \(id 'b'\): empty text"):
        prepare_task(task, "t", tmp_path)


def test_empty_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "header.csv").write_text("id,title,body,rating\n")
    (tmp_path / "blank.csv").write_text("\n")
    for name, pattern in (("empty.jsonl", "is empty"), ("header.csv", r"is empty \(no rows\)"),
                          ("blank.csv", "is empty")):
        with pytest.raises(DataError, match=pattern) as err:
            prepare_task(reviews(tmp_path / name), "reviews", tmp_path)
        assert str(tmp_path / name) in str(err.value)


def test_missing_file_and_bad_json_line(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl does not exist"):
        read_local(tmp_path / "nope.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"id": "a"}\n{"id": \n')
    with pytest.raises(DataError, match=r"broken\.jsonl line 2 is not valid JSON"):
        read_local(tmp_path / "broken.jsonl")
    with pytest.raises(DataError, match=r"unsupported extension '\.xlsx'"):
        read_local(tmp_path / "data.xlsx")


def test_duplicate_ids_name_the_rows(tmp_path):
    rows = raw_rows()
    rows[3]["id"] = "r02"
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    with pytest.raises(DataError) as err:
        prepare_task(reviews(path), "reviews", tmp_path)
    assert "dup.jsonl" in str(err.value) and "duplicate id 'r02' at rows [2, 4]" in str(err.value)


def test_empty_split_names_task_and_split(tmp_path):
    path = write_jsonl(tmp_path / "three.jsonl", raw_rows()[:3])
    with pytest.raises(DataError) as err:
        prepare_task(reviews(path, test_fraction=0.01, dev_fraction=0.5), "tiny", tmp_path)
    msg = str(err.value)
    assert "task 'tiny'" in msg and "test split is empty" in msg and "3 examples" in msg
    assert "raise test_fraction" in msg and "max_test" in msg


# ---------------------------------------------------------------- split files
def test_write_and_load_split_roundtrip(tmp_path):
    splits = prepare_task(reviews(), "reviews", tmp_path)
    paths = write_splits(splits, tmp_path / "out", {"task": "reviews", "config_hash": "abc"})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dev.parquet", "test.parquet", "train.parquet"]
    meta = read_table_meta(paths["dev"])
    assert (meta["task"], meta["config_hash"], meta["split"], meta["n_examples"]) == ("reviews", "abc", "dev", 9)
    for split, path in paths.items():
        back = load_split(path, reviews())
        pd.testing.assert_frame_equal(back, splits[split], check_dtype=False)
        assert str(back["label"].dtype) == "int64"


def test_load_split_rejects_bad_files(tmp_path):
    df = prepare_task(reviews(), "reviews", tmp_path)["train"]
    write_table(df.drop(columns="label_text"), tmp_path / "nocol.parquet", {})
    with pytest.raises(DataError) as err:
        load_split(tmp_path / "nocol.parquet", reviews())
    assert "nocol.parquet" in str(err.value) and "column 'label_text' is missing" in str(err.value)

    bad = df.copy()
    bad.loc[4, "label"] = 7
    write_table(bad, tmp_path / "range.parquet", {})
    with pytest.raises(DataError) as err:
        load_split(tmp_path / "range.parquet", reviews())
    msg = str(err.value)
    assert "range.parquet row 5" in msg and "'r08'" in msg and "label 7 is outside 0..2" in msg

    two = reviews(labels={"0": "negative", "1": "neutral", "2": "good"})
    write_table(df, tmp_path / "ok.parquet", {})
    with pytest.raises(DataError, match=r"ok\.parquet row 1 \(id 'r09'\): label_text 'positive' != configured text 'good'"):
        load_split(tmp_path / "ok.parquet", two)


# ---------------------------------------------------------------- Hugging Face datasets (local builders only)
@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return tmp_path


@pytest.mark.parametrize("builder,fname", [("json", "reviews.jsonl"), ("csv", "reviews.csv")])
def test_hf_adapter_on_local_builders(hf_cache, builder, fname):
    task = reviews(source="hf", path=builder, data_files=str(FIX / fname), hf_split="train")
    splits = prepare_task(task, "reviews", hf_cache)
    assert [splits[s]["id"].tolist() for s in ("train", "dev", "test")] == [TRAIN, DEV, TEST]
    local = prepare_task(reviews(), "reviews", hf_cache)
    for split in splits:
        pd.testing.assert_frame_equal(splits[split], local[split])


def test_hf_adapter_error_names_the_dataset(hf_cache):
    task = reviews(source="hf", path="json", data_files=str(hf_cache / "absent.jsonl"))
    with pytest.raises(DataError, match=r"could not load Hugging Face dataset 'json' \(data_files '.*absent\.jsonl'"):
        prepare_task(task, "reviews", hf_cache)


# ---------------------------------------------------------------- BIG-bench, small fixtures
NLI = {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}


def test_bigbench_records_take_the_top_scoring_label():
    recs = bigbench_records(FIX / "bigbench_task.json")
    assert [r["id"] for r in recs] == ["0", "1", "2", "17"]
    assert [r["label"] for r in recs] == ["entailment", "contradiction", "neutral", "entailment"]
    assert all("canary" not in r for r in recs)


def test_bigbench_task_from_cache_needs_no_archive(tmp_path):
    cached = tmp_path / "cache" / "bigbench" / "tiny_nli" / "task.json"
    cached.parent.mkdir(parents=True)
    cached.write_bytes((FIX / "bigbench_task.json").read_bytes())
    task = TaskConfig(source="bigbench", path="tiny_nli", labels=NLI, dev_fraction=0.3, test_fraction=0.3)
    raw, where = SOURCES["bigbench"].read(task, None, tmp_path / "cache")  # the archive is not needed
    splits = split_examples(normalise(raw, task, where), "tiny_nli", task)
    assert [splits[s]["id"].tolist() for s in ("train", "dev", "test")] == [["17"], ["0", "1"], ["2"]]
    assert splits["dev"]["label_text"].tolist() == ["yes", "no"]
    paths = write_splits(splits, tmp_path / "out", {"task": "tiny_nli"})
    assert all(b"canary" not in p.read_bytes().lower() for p in paths.values())


def test_bigbench_bad_examples(tmp_path):
    doc = json.loads((FIX / "bigbench_task.json").read_text())
    doc["examples"][2]["target_scores"] = {"entailment": 1, "neutral": 1, "contradiction": 0}
    (tmp_path / "tie.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"tie\.json example 2: labels \['entailment', 'neutral'\] share the top score"):
        bigbench_records(tmp_path / "tie.json")
    (tmp_path / "gen.json").write_text(json.dumps({"examples": [{"input": "2+2", "target": "4"}]}))
    with pytest.raises(DataError, match=r"gen\.json example 0: no 'target_scores'"):
        bigbench_records(tmp_path / "gen.json")


def test_bigbench_parent_task_lists_subtasks(tmp_path):
    bb = tmp_path / "bigbench"
    (bb / "fam").mkdir(parents=True)
    (bb / "fam" / "task.json").write_text(json.dumps({"name": "fam", "description": "parent"}))
    (bb / "index.json").write_text(json.dumps({"stamp": {}, "tasks": {"fam": [0, 1], "fam/a_en": [0, 1],
                                                                      "fam/b_en": [0, 1], "other": [0, 1]}}))
    task = TaskConfig(source="bigbench", path="fam", labels=NLI)
    with pytest.raises(DataError, match=r"has no examples.*subtasks of 'fam': \['fam/a_en', 'fam/b_en'\]"):
        SOURCES["bigbench"].read(task, None, tmp_path)


# ---------------------------------------------------------------- BIG-bench, the real archive
@pytest.fixture(scope="module")
def archive():
    """The archive, fetched into the machine's cache as the workflow fetches it. PyPI stopped serving it: the
    test skips, naming the package, only when the registry says so; any other failure fails."""
    try:
        return fetch_artifact(ARTIFACT, default_cache_dir(), "bigbench")
    except SourceUnavailable as err:
        if err.missing:
            pytest.skip(f"{ARTIFACT.pin} is no longer served by PyPI: {str(err)[:300]}")
        raise


@pytest.fixture(scope="module")
def real_bb(tmp_path_factory, archive):
    """One cache for the module: the index pass (~6 s) extracts products; intent uses the index."""
    cache = tmp_path_factory.mktemp("bbcache")
    products = extract_bigbench_task(archive, "multiemo/products_text_en", cache)
    intent = extract_bigbench_task(archive, "intent_recognition", cache)
    return cache, products, intent


def test_real_bigbench_products(real_bb, archive, tmp_path):
    cache, products, _ = real_bb
    assert products == cache / "bigbench" / "multiemo" / "products_text_en" / "task.json"
    recs = bigbench_records(products)
    assert len(recs) == 484
    assert Counter(r["label"] for r in recs) == {"negative": 295, "ambivalent": 133, "positive": 54, "neutral": 2}

    labels = {"negative": "negative", "neutral": "neutral", "positive": "positive", "ambivalent": "ambivalent"}
    task = TaskConfig(source="bigbench", path="multiemo/products_text_en", labels=labels)
    splits = split_examples(normalise(SOURCES["bigbench"].read(task, archive, cache)[0], task, "products"),
                            "products", task)
    assert sum(len(s) for s in splits.values()) == 484
    assert Counter(t for s in splits.values() for t in s["label_text"]) == {
        "negative": 295, "ambivalent": 133, "positive": 54, "neutral": 2}
    canary = json.loads(products.read_text())["canary"]
    paths = write_splits(splits, tmp_path, {"task": "products"})
    for path in paths.values():
        assert canary.encode() not in path.read_bytes()
        assert "canary" not in json.dumps(pq.read_schema(path).metadata.get(b"promptgrid").decode()).lower()


def test_real_bigbench_intent_recognition(real_bb):
    _, _, intent = real_bb
    recs = bigbench_records(intent)
    assert len(recs) == 693
    counts = Counter(r["label"] for r in recs)
    assert len(counts) == 7 and counts["add_to_playlist"] == 122 and counts["rate_book"] == 80
    assert recs[0]["input"] == "Utterance: Add Sabrina Salerno to the grime instrumentals playlist."


def test_real_bigbench_index_cache_and_missing_names(real_bb, archive, tmp_path):
    cache, products, _ = real_bb
    index = bigbench_index(archive, cache)
    assert len(index) == 1041 and "intent_recognition" in index
    # cached: a second call needs neither the archive nor a pass over it
    assert extract_bigbench_task(tmp_path / "absent.tar.gz", "multiemo/products_text_en", cache) == products
    with pytest.raises(DataError, match=r"'multiemo/products_text_eng' is not in bigbench-1\.0\.0\.tar\.gz; "
                                        r"did you mean \['multiemo/products_text_en'"):
        extract_bigbench_task(archive, "multiemo/products_text_eng", cache)
    with pytest.raises(DataError, match=r"'vitaminc'.*vitaminc_fact_verification"):
        extract_bigbench_task(archive, "vitaminc", cache)
    with pytest.raises(DataError, match="not a folder name"):
        extract_bigbench_task(archive, "../etc", cache)
