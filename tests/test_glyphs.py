"""The ``glyphs`` dataset: font identities rendered from Debian's fonts-aenigma.

Small tests copy a dozen real fonts into a temporary folder (chosen so that each selection
rule fires once); the split tests load the whole package (287 identities, built once into a
temporary cache).
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import needs_fonts, run_cli
from re_analysis import ReAnalysisError
from re_analysis.data import (default_image_size, hflip_preserves_labels, load_dataset, manifest_hash,
                              materialize)
from re_analysis.data import glyphs as G

AENIGMA = Path(G.FONT_PACKAGES["fonts-aenigma"])
# 14 files, 13 families: tetri lacks lowercase, bocumang is bocuma's family, hairball is dented's design
SMALL = ["bocuma", "bocumang", "ccaps", "conduit", "dented", "gather", "hairball", "jawbreak", "lucid",
         "relapse", "tetri", "wager", "yonder", "zenith"]


@pytest.fixture
def small_fonts(tmp_path, monkeypatch):
    if not AENIGMA.is_dir():
        pytest.skip("Debian package fonts-aenigma not installed")
    folder = tmp_path / "fonts"
    folder.mkdir()
    for name in SMALL:
        shutil.copy(AENIGMA / f"{name}.ttf", folder)
    monkeypatch.setenv("RE_ANALYSIS_DATA", str(tmp_path / "data"))
    return folder


@pytest.fixture(scope="module")
def aenigma(tmp_path_factory):
    if not AENIGMA.is_dir():
        pytest.skip("Debian package fonts-aenigma not installed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RE_ANALYSIS_DATA", str(tmp_path_factory.mktemp("data")))
        yield {"seed0": load_dataset("glyphs", seed=0), "seed1": load_dataset("glyphs", seed=1),
               "ids1": load_dataset("glyphs", seed=0, identity_seed=1)}


def test_missing_fonts_name_the_debian_packages(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReAnalysisError, match=r"no TrueType fonts for the glyphs dataset in .*empty; install "
                                              r"Debian's font packages \(`apt-get install fonts-aenigma`\)"):
        load_dataset("glyphs", root=tmp_path / "empty")
    monkeypatch.setattr(G, "FONT_PACKAGES", {"fonts-aenigma": str(tmp_path / "nowhere")})
    with pytest.raises(ReAnalysisError, match="apt-get install fonts-aenigma"):
        load_dataset("glyphs")


def test_cli_says_it_in_one_line(tmp_path):
    proc = run_cli("train", "--dataset", "glyphs", "--root", tmp_path, "--out", tmp_path / "run", check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "apt-get install fonts-aenigma" in proc.stderr


def test_selection_rules_fire_on_real_fonts(small_fonts):
    m = load_dataset("glyphs", root=small_fonts, num_private=4).manifest
    dropped = m["dropped"]
    assert dropped["no_latin_glyphs"] == [{"font": "tetri.ttf", "reason": ".notdef drawn for 26 characters (a, b, c, ...)"}]
    assert dropped["same_family"] == [{"font": "bocumang.ttf", "family": "bocuma", "kept": "bocuma.ttf"}]
    assert [(d["font"], d["like"]) for d in dropped["near_duplicate"]] == [("hairball.ttf", "dented.ttf")]
    assert 0.3 < dropped["near_duplicate"][0]["distance"] < G.DUPLICATE_THRESHOLD
    kept = [i["font"] for i in m["identities"]]
    assert len(kept) == 11 and len({i["family"] for i in m["identities"]}) == 11
    assert {f["font"] for f in m["fonts"]} == {f"{n}.ttf" for n in SMALL}  # every file, kept or not, with its checksum
    assert all(len(f["sha256"]) == 64 for f in m["fonts"])
    assert m["params"]["renderer"] == G.renderer_versions()  # another FreeType draws other pixels: another hash


def test_rendering_is_deterministic_cached_and_independent_of_workers(small_fonts, tmp_path, monkeypatch):
    first = G.build_glyphs(small_fonts, copies=2, cache_dir=tmp_path / "a", workers=1)
    again = G.build_glyphs(small_fonts, copies=2, cache_dir=tmp_path / "b", workers=2)
    assert torch.equal(first.images, again.images) and first.manifest == again.manifest
    assert first.images.shape == (11, 124, 32, 32) and first.images.dtype == torch.uint8
    # two copies of a character are two different jitters of one glyph
    assert not torch.equal(first.images[:, 0], first.images[:, 1])
    cached = list((tmp_path / "a").glob("glyphs-*.safetensors"))
    assert [p.name for p in cached] == [f"glyphs-{first.manifest['hash']}.safetensors"]
    G.cached_build.cache_clear()
    monkeypatch.setattr(G, "render_identities", lambda *a, **k: pytest.fail("rendered again despite the cache"))
    assert torch.equal(G.build_glyphs(small_fonts, copies=2, cache_dir=tmp_path / "a").images, first.images)


def test_a_changed_font_checksum_changes_the_manifest_hash(small_fonts):
    before = load_dataset("glyphs", root=small_fonts, num_private=4)
    with open(small_fonts / "zenith.ttf", "ab") as fh:  # same name, other bytes: another version of the font
        fh.write(b"\0" * 4)
    after = load_dataset("glyphs", root=small_fonts, num_private=4)
    assert manifest_hash(before) == before.manifest["hash"] and len(manifest_hash(before)) == 16
    assert manifest_hash(after) != manifest_hash(before)
    sha = {f["font"]: f["sha256"] for f in after.manifest["fonts"]}
    assert sha["zenith.ttf"] == G.sha256_of(small_fonts / "zenith.ttf")
    assert manifest_hash(load_dataset("mnist5k")) is None


def test_split_by_character_keeps_copies_together(small_fonts):
    s = load_dataset("glyphs", root=small_fonts, num_private=4, copies=2, seed=3)
    assert torch.bincount(materialize(s.private_test)[1]).tolist() == [12] * 4  # 6 of 62 characters x 2 copies
    assert len(s.private_train) == 4 * 56 * 2 and s.num_public_classes == 7
    train, test = G.split_by_character(4, torch.arange(62).repeat_interleave(2), 0.1, seed=3)
    per_char = test.reshape(4, 62, 2)
    assert (per_char[..., 0] == per_char[..., 1]).all() and (train == ~test).all()  # a character's copies stay together
    assert not all((per_char[0] == per_char[k]).all() for k in range(1, 4))  # each identity holds out its own


def test_bad_parameters_are_one_clear_error(small_fonts):
    with pytest.raises(ReAnalysisError, match=r"only 11 font identities .* pass num_private below 11"):
        load_dataset("glyphs", root=small_fonts, num_private=11)
    with pytest.raises(ReAnalysisError, match="copies must be an integer >= 1"):
        load_dataset("glyphs", root=small_fonts, copies=0)
    with pytest.raises(ReAnalysisError, match=r"test_fraction must lie in \(0, 1\)"):
        load_dataset("glyphs", root=small_fonts, test_fraction=1.5)


def test_no_flips_and_32_px():
    assert hflip_preserves_labels("glyphs") is False and default_image_size("glyphs") == 32


@needs_fonts
def test_private_and_public_fonts_are_disjoint_identities(aenigma):
    s = aenigma["seed0"]
    assert (s.num_classes, s.channels, s.image_size, s.hflip_preserves_labels) == (100, 1, 32, False)
    total = len(s.manifest["identities"])
    assert total >= 250 and s.num_public_classes == total - 100
    assert not set(s.private_class_names) & set(s.public_class_names)
    assert len(set(s.private_class_names + s.public_class_names)) == total
    assert len(s.private_train) == 100 * 56 and len(s.private_test) == 100 * 6 and len(s.public) == (total - 100) * 62
    priv = {bytes(a) for a in materialize(s.private_train)[0].numpy()}
    assert not priv & {bytes(a) for a in materialize(s.public)[0].numpy()}
    assert s.manifest["packages"].get("fonts-aenigma")  # the installed Debian version, recorded
    assert len(s.manifest["fonts"]) == 465 and manifest_hash(s) == s.manifest["hash"]


@needs_fonts
def test_identity_seed_chooses_the_identities_and_seed_the_held_out_characters(aenigma):
    s0, s1, ids1 = aenigma["seed0"], aenigma["seed1"], aenigma["ids1"]
    same = load_dataset("glyphs", seed=0)
    assert torch.equal(materialize(same.private_train)[0], materialize(s0.private_train)[0])
    assert same.private_class_names == s0.private_class_names
    assert set(ids1.private_class_names) != set(s0.private_class_names)
    # the study seed only redraws held-out characters: the public fonts (the prior's data,
    # trained once with its own seed and shared by every target) never hold a private font
    assert s1.private_class_names == s0.private_class_names and s1.public_class_names == s0.public_class_names
    assert torch.equal(materialize(s1.public)[0], materialize(s0.public)[0])
    assert not torch.equal(materialize(s1.private_test)[0], materialize(s0.private_test)[0])
    assert manifest_hash(s1) == manifest_hash(ids1) == manifest_hash(s0)  # same fonts and rendering


@needs_fonts
def test_images_are_real_glyphs_of_their_font(aenigma):
    s = aenigma["seed0"]
    x_train, y_train = materialize(s.private_train)
    x_test, y_test = materialize(s.private_test)
    ink = x_train.float().mean() / 255
    assert 0.08 < ink < 0.2  # strokes on black, like MNIST's 13%
    # a held-out character's nearest training image (always another character) is of its font
    # far above chance (1%): identity is style shared across content
    nearest = torch.cdist(x_test.flatten(1).float(), x_train.flatten(1).float()).argmin(1)
    assert (y_train[nearest] == y_test).float().mean() > 0.2
    # and the characters are readable: the nearest image in the public fonts is the same character
    glyphs = G.build_glyphs()
    pub = [glyphs.font_names.index(i["font"]) for i in s.manifest["identities"] if i["name"] in s.public_class_names]
    ref = glyphs.images[pub].flatten(0, 1).flatten(1).float()
    ref_chars = glyphs.characters.repeat(len(pub))
    query = glyphs.images[[i for i in range(len(glyphs.font_names)) if i not in pub]].flatten(0, 1).flatten(1).float()
    query_chars = glyphs.characters.repeat(len(query) // len(glyphs.characters))
    hits = (ref_chars[torch.cdist(query, ref).argmin(1)] == query_chars).float().mean()
    assert hits > 0.15  # chance: 1/62


@needs_fonts
def test_a_prior_is_checked_on_public_fonts_it_never_saw(aenigma):
    """Fonts are identities: the prior's held-out public part is whole fonts (on digits it is
    a share of each digit's images), so its quality check compares samples with identities
    the prior never trained on."""
    from re_analysis.attacks.priors import PriorConfig, public_parts, split_public

    s = aenigma["seed0"]
    assert s.labels_are_identities and not load_dataset("mnist5k").labels_are_identities
    _, y = materialize(s.public)
    train, held = split_public(y, 0.2, seed=0, by_identity=True)
    held_ids = set(y[held].tolist())
    assert not set(y[train].tolist()) & held_ids and len(train) + len(held) == len(y)
    assert len(held_ids) == round(0.2 * s.num_public_classes)
    assert all(int((y[held] == k).sum()) == int((y == k).sum()) for k in held_ids)  # each font whole
    _, prior_train, prior_held = public_parts(PriorConfig(dataset="glyphs"))
    assert (len(prior_train), len(prior_held)) == (len(train), len(held))
