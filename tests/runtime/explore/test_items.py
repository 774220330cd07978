"""The shared explore core: items read alike from an embeddings folder, an index file and a Milvus
collection; their checksum and class labels; thumbnails for the pages; the progress bar."""

from __future__ import annotations

import numpy as np
import pytest
from dedup_testing import embed_folder, synthetic_folder, unit
from PIL import Image

from invspread_edge_runtime.errors import ConfigError, DataError, EmptyGalleryError, InvedgeError
from invspread_edge_runtime.explore.items import ExploreItems, common_root, open_items
from invspread_edge_runtime.explore.thumbs import write_thumbnails


@pytest.fixture(scope="module")
def photos_emb(image_folder, tmp_path_factory):
    return embed_folder(image_folder, tmp_path_factory.mktemp("items") / "photos.emb")


@pytest.fixture(scope="module")
def photos_index(photos_emb):
    from invspread_edge_runtime.index.manage import IndexBuildOptions, create_gallery

    out = photos_emb.parent / "photos.index"
    create_gallery(IndexBuildOptions(photos_emb, out=out))
    return out


def test_an_embeddings_folder_gives_vectors_ids_files_and_classes(photos_emb, image_folder):
    items = open_items(photos_emb)
    assert len(items) == 40 and items.kind == "embeddings" and items.source == str(photos_emb)
    assert items.vectors.shape == (40, 32) and items.vectors.dtype == np.float32
    assert items.space["space_id"] == "test/32" and items.root == image_folder.absolute()
    assert all(loc == str(image_folder / item) for item, loc in zip(items.ids, items.locations, strict=True))
    labels = items.labels()
    assert labels is not None and sorted(set(labels)) == ["class0", "class1", "class2", "class3"]
    assert labels == [item.split("/")[0] for item in items.ids]


def test_an_index_file_gives_the_same_items_and_checksum(photos_emb, photos_index):
    folder, index = open_items(photos_emb), open_items(str(photos_index))
    assert index.kind == "index" and index.ids == folder.ids and index.locations == folder.locations
    np.testing.assert_array_equal(index.vectors, folder.vectors)
    assert index.checksum == folder.checksum and len(index.checksum) == 64
    assert index.labels() == folder.labels()  # its root: the folder holding every image


def test_a_milvus_collection_is_read_whole_in_pages(photos_emb, tmp_path, monkeypatch):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from invspread_edge_runtime.embeddings.reader import load_embeddings
    from invspread_edge_runtime.milvus_store import gallery as milvus
    from invspread_edge_runtime.milvus_store.build import build_gallery

    store = f"milvus:{tmp_path / 'g.db'}"
    build_gallery(load_embeddings(photos_emb), store, "photos").close()
    paged = milvus.MilvusGallery.iter_items
    monkeypatch.setattr(milvus.MilvusGallery, "iter_items", lambda self: paged(self, batch=7))  # 6 pages
    items = open_items(None, store, "photos")
    folder = open_items(photos_emb)
    assert items.kind == "milvus" and items.source.startswith("collection photos in milvus:")
    assert sorted(items.ids) == sorted(folder.ids)
    rows = {item: row for row, item in enumerate(items.ids)}
    order = [rows[item] for item in folder.ids]
    np.testing.assert_allclose(items.vectors[order], folder.vectors, atol=1e-6)
    assert [items.locations[r] for r in order] == folder.locations
    assert sorted(items.labels()) == sorted(folder.labels())


def test_the_checksum_changes_with_a_vector_or_an_id():
    vectors = unit(np.random.default_rng(0).standard_normal((5, 8)))
    base = ExploreItems(vectors, list("abcde"), [""] * 5, {}, "x", "embeddings")
    other = vectors.copy()
    other[3, 0] += 1e-3
    assert base.checksum == ExploreItems(vectors.copy(), list("abcde"), [""] * 5, {}, "y", "index").checksum
    assert base.checksum != ExploreItems(other, list("abcde"), [""] * 5, {}, "x", "embeddings").checksum
    assert base.checksum != ExploreItems(vectors, list("abcdf"), [""] * 5, {}, "x", "embeddings").checksum


@pytest.mark.parametrize(
    "locations",
    [
        ["/p/a/1.png", "/p/a/2.png", "/p/a/3.png"],  # one class folder: nothing to compare with
        ["/p/1.png", "/p/a/2.png", "/p/b/3.png"],  # an image outside every class folder
        ["/p/a/1.png", "", "/p/b/3.png"],  # an unknown file
    ],
)
def test_labels_need_every_item_in_one_of_two_or_more_folders(locations):
    items = ExploreItems(
        np.eye(3, dtype=np.float32), ["1", "2", "3"], locations, {}, "x", "index", common_root(locations)
    )
    assert items.labels() is None


def test_labels_of_class_folders_under_a_common_root():
    locations = ["/p/a/1.png", "/p/b/2.png", "/p/a/sub/3.png"]
    items = ExploreItems(
        np.eye(3, dtype=np.float32), ["1", "2", "3"], locations, {}, "x", "index", common_root(locations)
    )
    assert items.labels() == ["a", "b", "a"]


def test_a_folder_without_a_root_has_no_locations(tmp_path):
    from invspread_edge_runtime.embeddings.layout import MANIFEST

    emb = synthetic_folder(tmp_path / "g.emb", unit(np.random.default_rng(1).standard_normal((4, 8))))
    manifest = (emb / MANIFEST).read_text().replace(f'"{tmp_path / "photos"}"', '""')
    (emb / MANIFEST).write_text(manifest)
    items = open_items(emb)
    assert items.locations == [""] * 4 and items.root is None and items.labels() is None


@pytest.mark.parametrize(
    ("args", "error", "words"),
    [
        ((None,), ConfigError, "nothing to read"),
        (("x.emb", "milvus:g.db", "c"), ConfigError, "not both"),
        ((None, "milvus:g.db"), ConfigError, "--store and --collection go together"),
        (("missing.emb",), DataError, "not found: missing.emb"),
    ],
)
def test_bad_targets_are_one_line_errors(args, error, words):
    with pytest.raises(error, match=words) as caught:
        open_items(*args)
    assert caught.value.hint


def test_a_file_that_is_not_an_index_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvedgeError, match="not an invspread-edge index"):
        open_items(tmp_path / "notes.txt")


def test_an_empty_gallery_is_refused(photos_emb, photos_index, tmp_path):
    from invspread_edge_runtime.index.manage import IndexRemoveOptions, remove_from_gallery

    empty = tmp_path / "empty.index"
    empty.write_bytes(photos_index.read_bytes())
    remove_from_gallery(IndexRemoveOptions(open_items(photos_emb).ids, index=empty))
    with pytest.raises(EmptyGalleryError, match="holds no items"):
        open_items(empty)


def test_thumbnails_are_small_jpegs_named_by_row_and_blank_for_missing_images(image_folder, tmp_path):
    images = sorted(image_folder.rglob("*.png"))[:2]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    locations = [str(images[0]), "", str(tmp_path / "gone.png"), str(tmp_path / "broken.png"), str(images[1])]
    written = write_thumbnails(locations, tmp_path / "page_files", size=64)
    assert written == ["page_files/000000.jpg", "", "", "", "page_files/000004.jpg"]
    with Image.open(tmp_path / written[0]) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == 64  # 28 px enlarged to the size asked


def test_the_progress_bar_is_silent_for_small_jobs_and_reports_big_ones():
    from invspread_edge_runtime.commands.options import progress_bar

    with progress_bar(10, "small") as on_progress:
        assert on_progress is None
    with progress_bar(5000, "big") as on_progress:
        on_progress(2500, 5000)
