"""The documentation site builds with ``mkdocs build --strict``: every link and anchor resolves, in README too.

README.md is the site's home page: ``docs/index.md`` includes it with the include-markdown plugin, which rewrites its
``docs/...`` links to the pages' own paths, so MkDocs checks README's links like any page's (a link to a file
outside ``docs/`` is not found and fails). ``mkdocs.yml``'s ``validation`` makes broken links and anchors warnings,
and ``--strict`` turns warnings into errors. The API reference is read from the sources (griffe's static analysis):
the build does not import the package, so it takes seconds.
"""
import os
import shutil
import subprocess

from test_readme import REPO, VENV_BIN, mkdocs_config

MKDOCS = os.path.join(VENV_BIN, "mkdocs")


def _build(root, site):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2.0, printed on every run
    return subprocess.run([MKDOCS, "build", "--strict", "--config-file", os.path.join(root, "mkdocs.yml"),
                           "--site-dir", str(site)], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_site_builds_strict_with_every_link_and_anchor_resolved(tmp_path):
    done = _build(REPO, tmp_path / "site")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "WARNING" not in done.stderr, done.stderr[-5000:]
    for page in ("index.html", "training/index.html", "architecture/index.html", "api/models/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert 'href="training/"' in home and "make demo" in home  # README, its docs/ links rewritten for the site
    api = (tmp_path / "site" / "api" / "models" / "index.html").read_text(encoding="utf-8")
    assert "resnest_gluon.zoo.get_model" in api  # the reference is generated from the docstrings


def test_links_and_anchors_are_checked():
    config = mkdocs_config()
    assert config["strict"] is True
    assert all(config["validation"][kind] == "warn" for kind in
               ("omitted_files", "absolute_links", "unrecognized_links", "anchors")), config["validation"]
    mkdocstrings = next(p["mkdocstrings"] for p in config["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    assert mkdocstrings["handlers"]["python"]["options"]["allow_inspection"] is False  # never imports the package
    index = open(os.path.join(REPO, "docs", "index.md"), encoding="utf-8").read()
    assert '{% include-markdown "../README.md" %}' in index


def test_a_broken_readme_link_fails_the_build(tmp_path):
    """The check really runs: README with a missing page, a missing anchor and a link out of docs/ fails."""
    root = tmp_path / "repo"
    shutil.copytree(os.path.join(REPO, "docs"), root / "docs")
    shutil.copy(os.path.join(REPO, "mkdocs.yml"), root)
    os.symlink(os.path.join(REPO, "resnest_gluon"), root / "resnest_gluon")
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    (root / "README.md").write_text(readme + "\n[a](docs/no-such-page.md) [b](docs/training.md#no-such-section) "
                                             "[c](scripts/verify.py)\n", encoding="utf-8")
    done = _build(str(root), tmp_path / "site")
    assert done.returncode != 0
    assert "'no-such-page.md'" in done.stderr, done.stderr[-3000:]
    assert "'#no-such-section'" in done.stderr, done.stderr[-3000:]
    assert "'../scripts/verify.py'" in done.stderr, done.stderr[-3000:]
