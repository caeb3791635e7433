"""The eval report records: every recorded result loads into them and serialises back to
the same JSON (plus the schema version); a document off the schema is refused clearly."""
import copy
import json

import pytest

from disco_zoo.harness.report import SCHEMA_VERSION, EvalReport, ReportError
from disco_zoo.model_cards import RESULTS_DIR, load_results

RECORDED = sorted(RESULTS_DIR.glob("*.json"))


def _doc(path=None):
    """A recorded result: ``path``'s, else the first that has every section (latency included)."""
    if path is None:
        path = next(p for p in RECORDED if "latency" in json.loads(p.read_text()))
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_recorded_results_round_trip(path):
    doc = _doc(path)
    report = EvalReport.from_dict(doc, str(path))
    out = report.to_dict()
    assert out.pop("schema_version") == SCHEMA_VERSION
    doc.pop("schema_version", None)  # a document from before versioning has none
    # the same keys, values and JSON types (sort_keys: key order is not part of the schema)
    assert json.dumps(out, sort_keys=True) == json.dumps(doc, sort_keys=True)
    assert EvalReport.from_dict(json.loads(report.to_json())) == report


def test_results_read_by_attribute():
    report = EvalReport.read(RESULTS_DIR / "resnet18_disco_2node.digits.json")
    doc = _doc(RESULTS_DIR / "resnet18_disco_2node.digits.json")
    assert report.accuracy.disco_top1 == doc["accuracy"]["disco_top1"] == report.accuracy.disco["top1"]
    assert report.accuracy.disco_single_process_top1 == doc["accuracy"]["disco_single_process_top1"]
    assert report.accuracy.dense_top1 == doc["accuracy"]["dense_top1"]
    assert report.at_input.bytes_per_pair == {(0, 1): doc["at_input"]["bytes_per_pair"]["0->1"],
                                              (1, 0): doc["at_input"]["bytes_per_pair"]["1->0"]}
    assert report.at_input.measured and not report.at_paper_size.measured
    assert report.latency.links[0].per_round.disco_ms == doc["latency"]["links"][0]["per_round"]["disco_ms"]
    assert report.latency.dense_rss_load_growth_bytes == doc["latency"]["dense_rss_load_growth_bytes"]
    assert report.latency_paper_size.dense_rss_load_growth_bytes is None
    assert report.environment.torch == doc["environment"]["torch"]
    with pytest.raises(AttributeError, match="metrics: \\['top1'\\]"):
        report.accuracy.disco_miou  # noqa: B018
    assert set(load_results()) == {EvalReport.read(p).model for p in RECORDED}


def test_optional_sections_are_left_out_not_nulled():
    doc = _doc(RESULTS_DIR / "vit_tiny_disco_2node.digits.json")  # fixed input size: no paper-size figures
    report = EvalReport.from_dict(doc)
    assert report.at_paper_size is None and report.latency_paper_size is None
    assert "at_paper_size" not in report.to_dict() and "latency_paper_size" not in report.to_dict()
    no_latency = {k: v for k, v in doc.items() if k != "latency"}
    assert "latency" not in EvalReport.from_dict(no_latency).to_dict()


def test_documents_off_the_schema_are_refused(tmp_path):
    doc = _doc()
    missing = copy.deepcopy(doc)
    del missing["at_input"]["disco_bytes"]
    with pytest.raises(ReportError, match="at_input lacks the key 'disco_bytes'"):
        EvalReport.from_dict(missing, "r")
    extra = copy.deepcopy(doc)
    extra["latency"]["links"][0]["surprise"] = 1
    with pytest.raises(ReportError, match=r"latency\.links\[0\] has keys this schema does not know: \['surprise'\]"):
        EvalReport.from_dict(extra, "r")
    with pytest.raises(ReportError, match="schema_version 99"):
        EvalReport.from_dict({**doc, "schema_version": 99}, "r")
    bad_pair = copy.deepcopy(doc)
    bad_pair["at_input"]["bytes_per_pair"] = {"0-1": 5}
    with pytest.raises(ReportError, match="'0-1' is not 'j->k'"):
        EvalReport.from_dict(bad_pair, "r")
    uneven = copy.deepcopy(doc)
    del uneven["accuracy"][next(key for key in uneven["accuracy"] if key.startswith("dense_"))]
    with pytest.raises(ReportError, match="same metrics"):
        EvalReport.from_dict(uneven, "r")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ReportError, match="broken.json is not a readable eval result"):
        EvalReport.read(broken)


def test_write_is_atomic_and_reads_back(tmp_path):
    report = EvalReport.from_dict(_doc())
    path = report.write(tmp_path / "sub" / "result.json")
    assert EvalReport.read(path) == report
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]
