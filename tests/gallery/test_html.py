"""``index.html``: one self-contained page, opening in the export's order."""

from __future__ import annotations


def test_index_html_is_self_contained(mnist_gallery):
    gallery, _ = mnist_gallery
    page = (gallery / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert page.count("<tr data-class=") == 10
    for k in range(10):
        assert f'src="images/{k:04d}-{k}.png"' in page
    assert 'id="filter"' in page and 'id="order"' in page


def rows_of(page: str) -> list[dict]:
    """Each table row's data attributes, in page order."""
    import re

    return [dict(re.findall(r'data-(\w+)="([^"]*)"', tr)) for tr in re.findall(r"<tr data-class=[^>]*>", page)]


def test_a_top_export_opens_best_first(mnist_run, tmp_path):
    from evofool.gallery import export_gallery

    export_gallery(mnist_run, tmp_path / "top", top=4)
    page = (tmp_path / "top" / "index.html").read_text()
    rows = rows_of(page)
    assert [int(r["pos"]) for r in rows] == [0, 1, 2, 3]
    assert [float(r["conf"]) for r in rows] == sorted((float(r["conf"]) for r in rows), reverse=True)
    # The script starts from the table's order: the export's, not the class index.
    assert '<table id="classes" data-sort="pos:1">' in page and '<option value="pos:1">best first' in page

    export_gallery(mnist_run, tmp_path / "all")
    page = (tmp_path / "all" / "index.html").read_text()
    assert '<table id="classes" data-sort="class:1">' in page and 'value="pos:1"' not in page
    assert [int(r["class"]) for r in rows_of(page)] == list(range(10))
