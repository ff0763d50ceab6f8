from __future__ import annotations

import pytest

from promptclf.errors import InputError
from promptclf.labels import infer_labels, parse_labels


def test_comma_list():
    ls = parse_labels("business, sport ,tech")
    assert ls.names == ["business", "sport", "tech"]


def test_yaml_file_with_descriptions_and_aliases(tmp_path):
    f = tmp_path / "labels.yaml"
    f.write_text(
        "labels:\n"
        "  - name: science/technology\n    description: computers, science\n    aliases: [sci/tech, tech]\n"
        "  - name: sport\n"
    )
    ls = parse_labels(str(f))
    assert ls.names == ["science/technology", "sport"]
    assert ls.labels[0].description == "computers, science"
    assert ls.normalize("Sci/Tech") == "science/technology"
    assert ls.normalize("TECH.") == "science/technology"
    assert ls.normalize("weather") is None


def test_txt_file_with_descriptions(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("# topics\nbusiness: companies and markets\nsport\n")
    ls = parse_labels(str(f))
    assert ls.names == ["business", "sport"]
    assert ls.labels[0].description == "companies and markets"


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        parse_labels(str(tmp_path / "missing.yaml"))
    with pytest.raises(InputError, match="duplicate"):
        parse_labels("a,b,a")
    with pytest.raises(InputError, match="ambiguous"):
        f = tmp_path / "l.json"
        f.write_text('[{"name": "a", "aliases": ["x"]}, {"name": "b", "aliases": ["x"]}]')
        parse_labels(str(f))
    with pytest.raises(InputError, match="no values"):
        infer_labels(["", "  "])
