"""st.explorer: precompute against brute force, streaming == in memory, persistence, cards, and the widgets driven
programmatically (set a value, check what is shown). Small synthetic codes and images only."""
import math
import shutil

import ipywidgets as widgets
import nbformat
from ipywidgets.widgets.widget import _instances as widget_instances
from ipywidgets.widgets.widget_link import Link
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import sae_tutorial as st
from sae_tutorial.explorer import (CardRenderer, ImageSource, LatentExplorer, card_deck, interesting, latent_cards,
                                   load_stats, precompute, stats_path)
# The book's browser machinery: a book build as `make book` runs it, a local server (the session Chromium, the
# `browser` fixture, lives in conftest.py).
from test_book import KNOWN_NOISE, ROOT, build_book, serve

N, M, C, D = 240, 24, 4, 6
NAMES = ["cat", "dog", "ship", "tree"]


def chunks(t, sizes):
    """t split into row chunks of the given sizes (the last takes the rest), as a one-shot generator."""
    cuts = np.cumsum(sizes).tolist()
    return (t[a:b] for a, b in zip([0, *cuts], [*cuts, len(t)]) if b > a)


def make_data(seed=0):
    """Sparse non-negative codes (N, M) with a dead latent and a one-image latent, labels, embeddings, images."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.rand(N, M, generator=g, dtype=torch.float64) * 3
    codes *= torch.rand(N, M, generator=g) < 0.2
    codes[:, 5] = 0                                                    # dead
    codes[:, 6] = 0
    codes[17, 6] = 2.5                                                 # fires once
    codes[:, 7] *= 100                                                 # another scale
    labels = torch.randint(0, C, (N,), generator=g)
    emb = torch.randn(N, D, generator=g)
    images = (torch.rand(N, 8, 8, generator=g) * 255).to(torch.uint8).numpy()
    return codes, labels, emb, images


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def stats(data):
    codes, labels, emb, _ = data
    return precompute(codes, labels, emb, top_n=5, n_weak=3, sample=8, bins=8, class_names=NAMES)


# ---------------------------------------------------------------- precompute
def test_precompute_matches_brute_force(data, stats):
    codes, labels, emb, _ = data
    assert stats.n_samples == N and stats.n_latents == M and stats.top_n == 5
    for j in range(M):
        a = codes[:, j]
        fired = (a > 0).nonzero().squeeze(1)
        assert int(stats.count[j]) == len(fired)
        assert float(stats.frequency[j]) == pytest.approx(len(fired) / N)
        if len(fired) == 0:
            assert math.isnan(float(stats.mean_act[j])) and int(stats.dominant[j]) == -1
            assert (stats.top_rows[:, j] == -1).all() and (stats.weak_rows[:, j] == -1).all()
            continue
        assert float(stats.mean_act[j]) == pytest.approx(float(a[fired].mean()), rel=1e-12)
        ranked = fired[torch.argsort(a[fired], descending=True)][:5]                  # top images, brute force
        got = stats.top_rows[:, j][stats.top_rows[:, j] >= 0]
        assert got.tolist() == ranked.tolist()
        assert torch.allclose(stats.top_vals[: len(ranked), j].double(), a[ranked], rtol=1e-6)
        mass = torch.zeros(C, dtype=torch.float64).index_add_(0, labels[ranked], a[ranked])
        assert int(stats.dominant[j]) == int(mass.argmax())
        assert float(stats.dominant_share[j]) == pytest.approx(float(mass.max() / mass.sum()), rel=1e-6)
        e = int(np.frexp(float(a.max()))[1])                                          # 2^e > max
        edges = np.linspace(0, 2.0 ** e, 9)
        ref, _ = np.histogram(a[fired].numpy(), bins=edges)
        assert stats.hist[j].tolist() == ref.tolist() and float(stats.hist_upper[j]) == 2.0 ** e
        # sample (8) >= count for most latents: then the contrast images are exactly the weakest firing ones
        if len(fired) <= 8:
            weakest = fired[torch.argsort(a[fired])][:3]
            assert stats.weak_rows[: len(weakest), j].tolist() == weakest.tolist()
        w = stats.weak_rows[:, j][stats.weak_rows[:, j] >= 0]
        assert len(w) == min(3, len(fired)) and bool((a[w] > 0).all())
        assert torch.allclose(stats.weak_vals[: len(w), j].double(), a[w], rtol=1e-6)
        assert bool((stats.weak_vals[: len(w), j].diff() >= 0).all())                   # weakest first
    assert torch.allclose(stats.purity, st.metrics.class_purity(codes, labels, top_n=5), equal_nan=True)
    assert torch.allclose(stats.purity_weighted, st.metrics.class_purity(codes, labels, top_n=5, weighted=True),
                          equal_nan=True)
    assert torch.allclose(stats.ms, st.metrics.monosemanticity(codes, emb), equal_nan=True)


def test_streamed_equals_in_memory(data, stats):
    codes, labels, emb, _ = data
    streamed = precompute(chunks(codes, [7, 100, 1, 50]), labels, chunks(emb, [31, 31]), top_n=5, n_weak=3,
                          sample=8, bins=8, class_names=NAMES, chunk_size=13)
    for name, value in stats._tensors().items():
        assert torch.allclose(getattr(streamed, name).double(), value.double(), equal_nan=True), name


def test_histogram_merges_bins_when_the_max_grows():
    a = torch.zeros(64, 2)
    a[:, 0] = torch.linspace(0.01, 9.0, 64)                           # rising: each chunk raises the max
    a[::3, 1] = torch.linspace(0.001, 0.3, 22)
    s = precompute(chunks(a, [4, 4, 8, 16]), bins=16)
    for j in range(2):
        col = a[:, j][a[:, j] > 0]
        upper = 2.0 ** int(np.frexp(float(col.max()))[1])
        assert s.hist[j].tolist() == np.histogram(col.numpy(), bins=np.linspace(0, upper, 17))[0].tolist()


def test_contrast_sample_is_uniform_over_firing_images():
    codes = torch.zeros(400, 1)
    codes[:, 0] = torch.arange(1, 401).float()                         # fires everywhere, activation = row + 1
    picks = torch.cat([precompute(codes, n_weak=1, sample=1, seed=s).weak_rows[0] for s in range(300)])
    assert 120 < picks.float().mean() < 280                            # uniform over rows: mean near 200
    assert len(picks.unique()) > 150


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(codes=-torch.ones(4, 3)), ValueError, "negative"),
    (dict(codes=torch.full((4, 3), math.nan)), ValueError, "NaN"),
    (dict(codes=torch.ones(4)), ValueError, "2-D"),
    (dict(codes="codes"), TypeError, "codes"),
    (dict(labels=torch.zeros(3, dtype=torch.long)), ValueError, "labels"),
    (dict(labels=torch.zeros(4)), TypeError, "integer"),
    (dict(embeddings=torch.ones(5, 2)), ValueError, "embeddings"),
    (dict(bins=12), ValueError, "power of two"),
    (dict(top_n=0), ValueError, "top_n"),
    (dict(n_weak=4, sample=2), ValueError, "sample"),
    (dict(labels=torch.tensor([0, 1, 2, 2]), class_names=["a"]), ValueError, "class_names"),
])
def test_precompute_rejects_bad_input(kwargs, error, match):
    args = dict(codes=torch.rand(4, 3))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        precompute(args.pop("codes"), **args)


def test_order_and_interesting(stats):
    by_freq = stats.order("frequency")
    freq = stats.frequency[by_freq]
    alive = stats.alive[by_freq]
    assert bool((freq[alive].diff() <= 0).all()) and not bool(alive[-1])                # dead last
    assert stats.order("index").tolist() == list(range(M))
    dom = stats.dominant[stats.order("dominant class")][: int(stats.alive.sum())]
    assert bool((dom.diff() >= 0).all())
    ms = stats.scores()["MS"][stats.order("MS")]
    assert bool((ms[~ms.isnan()].diff() <= 0).all())
    custom = torch.arange(M, dtype=torch.float64)
    assert stats.order("mine", {"mine": custom})[0] == M - 1
    with pytest.raises(ValueError, match="by must be one of"):
        stats.order("popularity")
    with pytest.raises(ValueError, match="shape"):
        stats.scores({"bad": torch.ones(3)})
    picked = interesting(stats, 4, "frequency")
    assert len({int(stats.dominant[j]) for j in picked}) == len(picked)              # diverse: one per class
    assert all(int(stats.count[j]) >= stats.top_n for j in picked)


def test_save_load_round_trip_and_checks(tmp_path, data, stats):
    sae = st.TopKSAE(D, M, 3, seed=0)
    path = stats_path(tmp_path / "sae.safetensors")
    assert path.name == "sae.explorer.safetensors"
    stats.save(path, sae)
    back = load_stats(path, sae)
    assert back.class_names == NAMES and back.n_samples == N and back.sae_sha256
    for name, value in stats._tensors().items():
        assert getattr(back, name).dtype == value.dtype, name
        assert torch.allclose(getattr(back, name), value, rtol=0, atol=0, equal_nan=True), name
    with pytest.raises(ValueError, match="another SAE"):
        load_stats(path, st.TopKSAE(D, M, 3, seed=1))
    with pytest.raises(FileNotFoundError, match="precompute"):
        load_stats(tmp_path / "missing.safetensors")
    truncated = tmp_path / "bad.explorer.safetensors"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_stats(truncated)
    sae.save(tmp_path / "sae.safetensors")
    with pytest.raises(ValueError, match="not explorer statistics"):
        load_stats(tmp_path / "sae.safetensors")


# ---------------------------------------------------------------- images and cards
def test_image_source_accepts_arrays_tensors_and_pil():
    gray = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    chw = torch.rand(2, 3, 5, 5)
    pil = [Image.new("RGB", (6, 6), "red")] * 2
    for images in (gray, chw, pil, torch.from_numpy(gray)):
        thumb = ImageSource(images).thumbnail(1, 12)
        assert thumb.size == (12, 12) and thumb.mode == "RGB"
    with pytest.raises(ValueError, match="outside"):
        ImageSource(np.full((1, 4, 4), 2.0)).pil(0)
    with pytest.raises(TypeError, match="uint8 or floating"):
        ImageSource(np.zeros((1, 4, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="shape"):
        ImageSource(np.zeros((2, 4, 4, 5), dtype=np.uint8))
    with pytest.raises(TypeError, match="images must be"):
        ImageSource(42)


def test_card_renderer(data, stats):
    codes, labels, _, images = data
    W = torch.randn(M, D)
    r = CardRenderer(stats, images, labels, decoder=W)
    png = r.png(0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png != r.png(1)
    assert r.render(5).height < r.render(0).height                                   # a dead latent's card is short
    cos = F.normalize(W, dim=1) @ F.normalize(W, dim=1)[3]
    cos[3] = -2
    assert [i for i, _ in r.similar(3, 4)] == cos.topk(4).indices.tolist()
    hits = r.associated(2, 5)
    rows, vals = stats.top_rows.clamp_min(0), stats.top_vals.double() * (stats.top_rows >= 0)
    share = (vals * (labels[rows] == 2)).sum(0) / vals.sum(0)
    assert hits[0][1] == pytest.approx(float(share.nan_to_num(-1).max()))
    assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:]))
    assert r.class_mix(0)[0][1] == max(np.bincount(labels[stats.top_rows[:, 0]].numpy()))
    assert "cat" in r.title(0) or any(n in r.title(0) for n in NAMES)
    with pytest.raises(ValueError, match="rows but the statistics"):
        CardRenderer(stats, images[:10])
    with pytest.raises(ValueError, match="latent must be in"):
        r.png(M)
    with pytest.raises(TypeError, match="latent must be an int"):
        r.png("3")
    with pytest.raises(ValueError, match="class must be in"):
        r.associated(C)


def test_latent_cards_figure(data, stats):
    _, labels, _, images = data
    fig = latent_cards(stats, images, labels, k=3, ncols=2, title="three latents")
    assert sum(1 for ax in fig.axes if ax.images) == 3
    fig = latent_cards(stats, images, labels, latents=[0, 7])
    assert sum(1 for ax in fig.axes if ax.images) == 2
    with pytest.raises(ValueError, match="no latent to show"):
        latent_cards(precompute(torch.zeros(N, 2)), images)                           # every latent is dead


# ---------------------------------------------------------------- the widgets, driven programmatically
@pytest.fixture()
def explorer(data, stats):
    _, labels, _, images = data
    sae = st.TopKSAE(D, M, 3, seed=0)
    coords = np.random.default_rng(0).normal(size=(M, 2))
    return LatentExplorer(sae, stats, images, labels, umap=coords, title="test explorer")


def test_explorer_selecting_a_latent_updates_the_view(explorer, stats):
    first = explorer.selected
    assert first == interesting(stats, 1, "MS")[0]
    assert int(stats.order("MS")[explorer.rank.value]) == first
    before = (explorer.card.value, explorer.header.value, explorer.similar.options, explorer.picker.image.value)
    explorer.latent.value = 7
    assert explorer.selected == 7
    assert explorer.card.value != before[0] and explorer.card.value[:4] == b"\x89PNG"
    assert "latent #7" in explorer.header.value and explorer.header.value != before[1]
    assert explorer.similar.options != before[2] and explorer.similar.value is None
    assert explorer.picker.image.value != before[3]
    assert (explorer.picker.x.value, explorer.picker.y.value) == pytest.approx(tuple(explorer.picker.coords[7]))
    assert int(explorer.stats.order("MS")[explorer.rank.value]) == 7
    explorer.rank.value = 3                                                           # walk the sorted list
    assert explorer.selected == int(stats.order("MS")[3])


def test_explorer_sorting_search_similar_and_map(explorer, stats):
    explorer.sort.value = "frequency"
    assert explorer.selected == int(stats.count.argmax()) and explorer.rank.value == 0
    explorer.sort.value = "dominant class"
    assert explorer.selected == int(stats.order("dominant class")[0])
    explorer.class_pick.value = 1                                                     # class search: "dog"
    hits = [j for _, j in explorer.class_hits.options]
    assert hits and explorer.class_hits.value is None
    explorer.class_hits.value = hits[1]                                               # click the second hit
    assert explorer.selected == hits[1]
    target = explorer.similar.options[0][1]
    explorer.similar.value = target                                                   # click a similar latent
    assert explorer.selected == target
    j = 11
    explorer.picker.x.value, explorer.picker.y.value = (float(v) for v in explorer.picker.coords[j])
    assert explorer.selected == explorer.picker.nearest(*explorer.picker.coords[j]) == j
    before = explorer.picker.image.value
    explorer.picker.color_by.value = "MS"
    assert explorer.picker.image.value != before and explorer.selected == j


def test_explorer_from_codes_and_from_a_saved_cache(tmp_path, data, stats):
    codes, labels, _, images = data
    sae = st.TopKSAE(D, M, 3, seed=0)
    live = LatentExplorer(sae, codes, images, labels, metrics={"mine": torch.arange(M)}, class_names=NAMES, top_n=4)
    assert live.stats.top_n == 4 and "mine" in live.sort.options and live.picker is None
    live.sort.value = "mine"
    assert live.selected == M - 1
    path = stats.save(tmp_path / "x.explorer.safetensors", sae)
    assert LatentExplorer(sae, path, images, labels).stats.n_samples == N
    with pytest.raises(TypeError, match="sae must be"):
        LatentExplorer("sae", stats, images)
    with pytest.raises(ValueError, match="latents but sae has"):
        LatentExplorer(st.TopKSAE(D, M + 1, 3), stats, images)
    with pytest.raises(ValueError, match="another SAE"):
        LatentExplorer(st.TopKSAE(D, M, 3, seed=5), path, images)


def test_card_deck_is_linked_in_the_browser(explorer):
    deck = card_deck([explorer, explorer], n_cards=3, titles=["a", "b"])
    slider, columns = deck.children[0], deck.children[1].children
    stacks = [col.children[1] for col in columns]
    assert all(isinstance(s, widgets.Stack) and len(s.children) == 3 for s in stacks)
    cards = [image.value for image in stacks[0].children]
    assert len(set(cards)) == 3 and all(c[:4] == b"\x89PNG" for c in cards)
    links = {(link.source[0].model_id, link.target[0].model_id) for link in widget_instances.values()
             if isinstance(link, Link)}
    assert all((slider.model_id, s.model_id) in links for s in stacks)
    with pytest.raises(ValueError, match="titles"):
        card_deck(explorer, titles=["a", "b"])
    with pytest.raises(TypeError, match="explorers"):
        card_deck([])


def test_cosine_knn_matches_brute_force():
    from sae_tutorial.explorer.umap import cosine_knn
    W = torch.randn(50, 7)
    idx, dist = cosine_knn(W, 6, block=16)                                           # several blocks
    cos = F.normalize(W, dim=1) @ F.normalize(W, dim=1).T
    for j in range(50):
        assert idx[j, 0] == j and dist[j, 0] == 0                                    # itself first
        others = [i for i in torch.argsort(cos[j], descending=True).tolist() if i != j][:5]
        assert idx[j, 1:].tolist() == others
        assert np.allclose(dist[j, 1:], 1 - cos[j, others].numpy(), atol=1e-6)


@pytest.mark.slow
def test_decoder_umap():
    from sae_tutorial.explorer import decoder_umap
    sae = st.TopKSAE(8, 40, 2, seed=0)
    coords = decoder_umap(sae, n_neighbors=5)
    assert coords.shape == (40, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    assert np.array_equal(coords, decoder_umap(sae.W_dec, n_neighbors=5))           # seeded
    with pytest.raises(ValueError, match="more than n_neighbors"):
        decoder_umap(torch.randn(5, 3), n_neighbors=5)


DECK_CELLS = [
    "# Card deck",
    "import numpy as np\nimport torch\nimport sae_tutorial as st\n"
    "g = torch.Generator().manual_seed(0)\n"
    "codes = torch.rand(300, 16, generator=g) * (torch.rand(300, 16, generator=g) < 0.3)\n"
    "labels = torch.randint(0, 3, (300,), generator=g)\n"
    "images = (torch.rand(300, 8, 8, generator=g) * 255).to(torch.uint8).numpy()\n"
    "explorer = st.explorer.LatentExplorer(st.TopKSAE(4, 16, 2, seed=0), codes, images, labels, top_n=4)\n"
    "st.explorer.card_deck([explorer, explorer], n_cards=3)",
]


@pytest.mark.slow
def test_card_deck_slider_works_without_a_kernel(tmp_path, browser):
    """Build a one-page book with a card deck (as `make book` does), drag its slider in Chromium: cards change."""
    shutil.copy(ROOT / "_config.yml", tmp_path)
    shutil.copytree(ROOT / "book", tmp_path / "book")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: deck\n")
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                 "display_name": "Python 3"}})
    notebook.cells = [nbformat.v4.new_markdown_cell(DECK_CELLS[0]), nbformat.v4.new_code_cell(DECK_CELLS[1])]
    nbformat.write(notebook, tmp_path / "deck.ipynb")
    with serve(build_book(tmp_path)) as url:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{url}/deck.html", wait_until="networkidle")
        page.wait_for_selector(".widget-image")
        shown = "() => [...document.querySelectorAll('.widget-image')].filter(i => i.offsetParent).map(i => i.src)"
        before = page.evaluate(shown)
        page.locator(".widget-hslider .noUi-handle").first.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(500)
        after = page.evaluate(shown)
        page.close()
    assert len(before) == len(after) == 2 and set(before).isdisjoint(after), "the slider did not change the cards"
    assert [e for e in errors if not any(noise in e for noise in KNOWN_NOISE)] == []
