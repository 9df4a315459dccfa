import base64

import pytest
from PIL import Image

from ml_backend.errors import ImageError
from ml_backend.service.images import ImageLoader, Source


@pytest.fixture
def loader(tmp_path):
    loader = ImageLoader(tmp_path / "cache", workers=4, max_bytes=1_000_000, max_pixels=10_000, timeout=1.0)
    yield loader
    loader.close()


def test_http_image_is_decoded_to_rgb(loader, image_server):
    image = loader.load(1, f"{image_server.url}/good.png")
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (64, 64)


@pytest.mark.parametrize(
    "path, reason",
    [
        ("/missing.png", "HTTP 404"),
        ("/corrupt.png", "corrupt image"),
        ("/text.png", "not an image"),
        ("/empty.png", "empty file"),
        ("/slow.png", "took longer than 1s"),
        ("/huge-stream.png", "more than IMAGE_MAX_BYTES"),
    ],
)
def test_bad_images_fail_with_a_reason(loader, image_server, path, reason):
    with pytest.raises(ImageError, match=reason):
        loader.load(7, f"{image_server.url}{path}")


def test_pixel_limit(tmp_path, image_server):
    small = ImageLoader(tmp_path / "c2", workers=1, max_bytes=10**6, max_pixels=100, timeout=2)
    with pytest.raises(ImageError, match="64x64 pixels, more than IMAGE_MAX_PIXELS=100"):
        small.load(1, f"{image_server.url}/good.png")


def test_unreachable_host_and_missing_reference(loader):
    with pytest.raises(ImageError, match="ConnectionError"):
        loader.load(1, "http://127.0.0.1:9/none.png")
    with pytest.raises(ImageError, match="no image reference"):
        loader.load(1, None)
    with pytest.raises(ImageError, match="LABEL_STUDIO_URL is not set"):
        loader.load(1, "/data/upload/1/x.png")


def test_data_uri(loader, digits64):
    uri = "data:image/png;base64," + base64.b64encode(digits64[0][1]).decode()
    assert loader.load(1, uri).size == (64, 64)


def test_load_many_keeps_order_and_isolates_failures(loader, image_server):
    refs = [
        (1, f"{image_server.url}/good.png"),
        (2, f"{image_server.url}/text.png"),
        (3, None),
        (4, f"{image_server.url}/digits/3.png"),
    ]
    out = loader.load_many(refs, Source())
    assert [type(x).__name__ for x in out] == ["Image", "ImageError", "ImageError", "Image"]


def test_credentials_go_only_to_the_label_studio_host(loader, image_server, second_server):
    """The token is sent to the LS host and never to another host named in task data."""
    source = Source(hostname=image_server.url, token=lambda: "secret-legacy-token")
    out = loader.load_many([(1, f"{image_server.url}/good.png"), (2, f"{second_server.url}/good.png")], source)
    assert all(isinstance(x, Image.Image) for x in out)
    ((_, ls_headers),) = [s for s in image_server.seen if s[0] == "/good.png"]
    ((_, other_headers),) = second_server.seen
    assert ls_headers.get("Authorization") == "Token secret-legacy-token"
    assert "Authorization" not in other_headers


def test_failed_token_refresh_fails_only_label_studio_images(loader, image_server, second_server):
    def broken():
        raise RuntimeError("refresh token expired")

    source = Source(hostname=image_server.url, token=broken)
    out = loader.load_many([(1, "/data/upload/1/a.png"), (2, f"{second_server.url}/good.png")], source)
    assert isinstance(out[0], ImageError) and "cannot authenticate with Label Studio" in str(out[0])
    assert isinstance(out[1], Image.Image)


def test_cache_serves_repeat_requests(loader, image_server):
    url = f"{image_server.url}/digits/5.png"
    loader.load(1, url)
    loader.load(1, url)
    assert sum(1 for path, _ in image_server.seen if path == "/digits/5.png") == 1


def test_cloud_uri_goes_through_label_studio_presign(loader, image_server, second_server):
    """s3:// (and gs://, azure-blob://) resolve through LS's presign endpoint with the task id and the
    token; LS answers with a redirect to the bucket, which must not receive the token. The bucket is
    the part that cannot run here, so a plain HTTP server stands in for it."""
    import base64 as b64

    uri = "s3://bucket/images/cat.png"
    presign = f"/tasks/7/presign/?fileuri={b64.urlsafe_b64encode(uri.encode()).decode()}"
    image_server.RequestHandlerClass.routes["/tasks/7/presign/"] = ("redirect", f"{second_server.url}/good.png")
    source = Source(hostname=image_server.url, token=lambda: "secret-token")
    (image,) = loader.load_many([(7, uri)], source)
    assert isinstance(image, Image.Image)
    ((path, headers),) = [s for s in image_server.seen if s[0].startswith("/tasks/7/presign/")]
    assert path == presign and headers.get("Authorization") == "Token secret-token"
    ((_, bucket_headers),) = second_server.seen
    assert "Authorization" not in bucket_headers


def test_uploads_are_fetched_at_their_path_without_a_refused_storage_request(loader, image_server, digits64):
    """Label Studio's default file storage serves /data/upload/…: asked there first, never at
    /storage-data/uploaded/ (which answers 400 plus a warning in Label Studio's log per image)."""
    image_server.RequestHandlerClass.routes["/data/upload/1/a.png"] = ("bytes", digits64[2][1])
    image_server.RequestHandlerClass.routes["/data/upload/1/b.png"] = ("bytes", digits64[3][1])
    source = Source(hostname=image_server.url, token=lambda: "secret-token")
    out = loader.load_many([(1, "/data/upload/1/a.png"), (2, "upload/1/b.png")], source)
    assert all(isinstance(x, Image.Image) for x in out)
    paths = [p for p, _ in image_server.seen]
    assert sorted(paths) == ["/data/upload/1/a.png", "/data/upload/1/b.png"]
    assert all(h.get("Authorization") == "Token secret-token" for _, h in image_server.seen)


def test_a_host_whose_uploads_live_in_cloud_storage_goes_through_the_storage_proxy(loader, image_server, digits64):
    image_server.RequestHandlerClass.routes["/storage-data/uploaded/"] = ("bytes", digits64[4][1])
    source = Source(hostname=image_server.url, token=lambda: "secret-token")
    for i in range(3):
        (image,) = loader.load_many([(i, f"/data/upload/1/c{i}.png")], source)
        assert isinstance(image, Image.Image)
    paths = [p.split("?")[0] for p, _ in image_server.seen]
    assert paths.count("/data/upload/1/c0.png") == 1 and paths.count("/storage-data/uploaded/") == 3
    assert not any(p.startswith("/data/upload/1/c1") or p.startswith("/data/upload/1/c2") for p in paths)


def test_the_image_threads_run_torch_on_themselves_alone(loader, digits64):
    """A thread that runs a parallel torch operation keeps an OpenMP team of its own; the image
    threads never start one (ml_backend/service/pools.py: one_torch_thread)."""
    import torch

    png = digits64[0][1]
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    counts = loader.load_many(
        [(i, uri) for i in range(8)], Source("", lambda: None), transform=lambda _: torch.get_num_threads()
    )
    assert counts == [1] * 8
