"""`mbm-keras serve`: TensorFlow Serving's REST API, uploads, dynamic batching, metrics and guards, on a tiny
trained run and its SavedModel; in-process (Starlette's TestClient) and as a real uvicorn process (slow)."""

import base64
import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import blank_png
from test_training import _free_ports, run_config

from mbm_keras.deploy import Predictor, export_model
from mbm_keras.serve import BatchOptions, ServeOptions, Servable, create_app
from mbm_keras.training import train

TestClient = pytest.importorskip("fastapi.testclient").TestClient


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny image + text run (masks on: either input may be left out), its SavedModel, and both loaded."""
    root = tmp_path_factory.mktemp("serve")
    train(str(run_config(root, train__epochs=2, data__missing_modalities=True)), verbose=0)
    export_model(str(root / "run"), "saved_model", str(root / "demo"), verbose=False)
    return root, {"run": Servable(str(root / "run")), "saved_model": Servable(str(root / "demo"))}


def _b64(path):
    return {"b64": base64.b64encode(open(path, "rb").read()).decode()}


def _instances(root, n=4):
    return [{"image": _b64(root / "img" / f"{i}.png"), "text": f"a {'red' if i % 2 else 'blue'} thing"}
            for i in range(n)]


def test_tf_serving_rest_api_on_a_run_and_its_saved_model(served):
    root, servables = served
    answers = {}
    for kind, servable in servables.items():
        with TestClient(create_app(servable)) as client:
            name = "run" if kind == "run" else "demo"  # the folder's name, as TF Serving's --model_name
            assert client.get(f"/v1/models/{name}").json() == {"model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
            meta = client.get(f"/v1/models/{name}/metadata").json()
            signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
            assert set(signature["inputs"]) == {"image", "text"}
            assert signature["inputs"]["image"]["dtype"] == "DT_STRING"
            assert signature["outputs"]["probabilities"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""},
                                                                                    {"size": "2", "name": ""}]
            assert meta["metadata"]["mbm_keras"]["classes"] == ["blue", "red"]
            assert meta["metadata"]["mbm_keras"]["inputs"]["image"] == {"modality": "image", "binary": True}
            missing = client.get("/v1/models/other")
            assert missing.status_code == 404 and "Servable not found for request: Latest(other)" in missing.json()["error"]
            rows = client.post(f"/v1/models/{name}:predict", json={"instances": _instances(root)})
            assert rows.status_code == 200, rows.text
            predictions = rows.json()["predictions"]
            columns = {k: [i[k] for i in _instances(root)] for k in ("image", "text")}
            outputs = client.post(f"/v1/models/{name}:predict", json={"inputs": columns}).json()["outputs"]
            assert outputs["probabilities"] == [p["probabilities"] for p in predictions]
            assert outputs["label"] == [p["label"] for p in predictions]
            answers[kind] = np.array(outputs["probabilities"])
    np.testing.assert_allclose(answers["run"], answers["saved_model"], atol=1e-5)  # one serving function
    # ... and the answers of predict, one example at a time.
    predictor = Predictor(str(root / "run"))
    for i, probabilities in enumerate(answers["run"]):
        expected = dict(predictor(image=str(root / "img" / f"{i}.png"), text=f"a {'red' if i % 2 else 'blue'} thing"))
        np.testing.assert_allclose([expected["blue"], expected["red"]], probabilities, atol=1e-5)


def test_the_json_body_runs_the_exported_signature_as_tensorflow_serving_would(served):
    import tensorflow as tf

    root, servables = served
    body = {"instances": _instances(root, 3) + [{"text": "only a text"}]}
    signature = tf.saved_model.load(str(root / "demo")).signatures["serving_default"]
    # TF Serving's row format: each instance's inputs, b64 decoded, stacked along the batch axis.
    columns = {name: [base64.b64decode(i[name]["b64"]) if isinstance(i.get(name), dict) else i.get(name, "").encode()
                      for i in body["instances"]] for name in signature.structured_input_signature[1]}
    outputs = signature(**{k: tf.constant(v) for k, v in columns.items()})
    # It answers row format only when every output holds one row per example.
    assert {k: int(v.shape[0]) for k, v in outputs.items()} == dict.fromkeys(outputs, 4)
    with TestClient(create_app(servables["saved_model"])) as client:
        served_rows = client.post("/v1/models/demo:predict", json=body).json()["predictions"]
    np.testing.assert_allclose([r["probabilities"] for r in served_rows], outputs["probabilities"].numpy(), atol=1e-6)
    assert [r["label"] for r in served_rows] == [x.decode() for x in outputs["label"].numpy()]


def test_an_upload_gives_the_top_classes(served):
    root, servables = served
    with TestClient(create_app(servables["run"])) as client:
        image = (root / "img" / "3.png").read_bytes()
        response = client.post("/predict", files={"image": ("3.png", image, "image/png")},
                               data={"text": "a red thing", "top": "2"})
        assert response.status_code == 200, response.text
        answer = response.json()
        only_text = client.post("/predict", files={"text": (None, "a red thing")}).json()  # the image left out
    expected = Predictor(str(root / "run"))(image=str(root / "img" / "3.png"), text="a red thing", top=2)
    assert [(c["class"], round(c["probability"], 5)) for c in answer["classes"]] == [(c, round(p, 5)) for c, p in expected]
    assert answer["label"] == expected[0][0] and answer["score"] == pytest.approx(expected[0][1], abs=1e-6)
    assert len(only_text["classes"]) == 2 and only_text["label"] in ("blue", "red")



def test_bad_requests_answer_4xx_in_json_naming_the_input(served, tmp_path):
    root, servables = served
    bomb = blank_png(tmp_path / "bomb.png", 16000, 16000)  # 256 M pixels in a few KB
    url = "/v1/models/run:predict"
    cases = [
        ("post", url, {"content": b"{not json"}, 400, "the body is not JSON", None),
        ("post", url, {"json": {"instances": [], "inputs": {}}}, 400, "not both or neither", None),
        ("post", url, {"json": {"instances": []}}, 400, "\"instances\" must be a non-empty list", "instances"),
        ("post", url, {"json": {"inputs": {"text": ["a"], "image": [None, None]}}}, 400, "different numbers", None),
        ("post", url, {"json": {"instances": [{"colour": "red"}]}}, 422, "the model has no input 'colour'", "colour"),
        ("post", url, {"json": {"instances": [{"image": "cat.png"}]}}, 422, "send its bytes as {\"b64\"", "image"),
        ("post", url, {"json": {"instances": [{"image": {"b64": "%%%"}}]}}, 422, "not valid base64", "image"),
        ("post", url, {"json": {"instances": [{"image": _b64(root / "train.csv")}]}}, 422,
         "input 'image': not a JPEG, PNG, BMP or GIF file", "image"),
        ("post", url, {"json": {"instances": [{"image": _b64(bomb)}]}}, 422,
         "image of 16000x16000 pixels is above the limit max_image_pixels", "image"),
        ("post", url, {"json": {"instances": [{"text": 5}] * 1025}}, 413, "1025 examples in one request", None),
        ("post", url, {"json": {"instances": [{"text": ["a"]}]}}, 422, "input 'text' must be a string", "text"),
        ("post", url, {"json": {"signature_name": "serve_tensors", "instances": [{"text": "a"}]}}, 400,
         "signature_name 'serve_tensors': this model has serving_default", "signature_name"),
        ("post", "/predict", {"json": {"text": "a"}}, 415, "this endpoint takes multipart/form-data", "content-type"),
        ("post", "/predict", {"files": {"text": (None, "a")}, "data": {"top": "0"}}, 422, "top must be", "top"),
        ("get", "/v1/models/run/nothing", {}, 404, "no endpoint /v1/models/run/nothing; this server answers /, ", None),
        ("get", "/search", {}, 404, "no endpoint /search", None),  # a retrieval model's: not this one's
        ("get", "/nothing/here", {}, 404, "no endpoint /nothing/here", None),
    ]
    with TestClient(create_app(servables["run"]), raise_server_exceptions=False) as client:
        for method, path, kwargs, status, message, field in cases:
            response = getattr(client, method)(path, **kwargs)
            assert response.status_code == status, (path, kwargs.keys(), response.text)
            if message is not None:
                assert message in response.json()["error"] and response.json().get("field") == field, response.json()
        metrics = client.get("/metrics").text
    assert 'mbm_keras_requests_total{code="422",endpoint="predict"}' in metrics and 'code="500"' not in metrics
    assert 'endpoint="other"' in metrics and "nothing" not in metrics  # a path from a request is no metrics label
    small = create_app(servables["run"], ServeOptions(max_body_bytes=100))
    with TestClient(small) as client:
        response = client.post(url, json={"instances": _instances(root, 1)})
        assert response.status_code == 413 and "over the limit of 100 bytes" in response.json()["error"]


def test_concurrent_requests_are_merged_and_a_bad_one_fails_alone(served):
    root, servables = served
    app = create_app(servables["run"], ServeOptions(batching=BatchOptions(max_batch_size=8, timeout_ms=200)))
    bodies = [{"instances": [one]} for one in _instances(root, 12)]
    bodies[5] = {"instances": [{"image": _b64(root / "train.csv")}]}  # not an image
    with TestClient(app) as client:
        alone = [client.post("/v1/models/run:predict", json=b).json() for b in bodies]  # one at a time
        calls_before = _metric(client, "mbm_keras_batch_size_count")
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            together = list(pool.map(lambda b: client.post("/v1/models/run:predict", json=b), bodies))
        calls = _metric(client, "mbm_keras_batch_size_count") - calls_before
    assert calls < 12, calls  # merged: fewer model calls than requests
    assert together[5].status_code == 422 and together[5].json()["field"] == "image"
    for i, response in enumerate(together):
        if i != 5:
            assert response.status_code == 200
            np.testing.assert_allclose(response.json()["predictions"][0]["probabilities"],
                                       alone[i]["predictions"][0]["probabilities"], atol=1e-5)


def _metric(client, name):
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(name + " ")]
    return float(lines[0].split()[-1])


def test_the_page_asks_for_every_class_even_without_a_preprocessor_beside_the_saved_model(served, tmp_path):
    import shutil

    root, servables = served
    shutil.copytree(root / "demo", tmp_path / "alone", ignore=shutil.ignore_patterns("preprocessor.json"))
    alone = Servable(str(tmp_path / "alone"))
    assert alone.classes is None and alone.output_specs["probabilities"]["shape"] == [-1, 2]
    for servable in (alone, servables["saved_model"]):
        with TestClient(create_app(servable)) as client:
            page = client.get("/").text
        assert '"classCount": 2' in page and '"binary": true' in page


def test_a_token_guards_everything_but_the_health_check(served):
    _, servables = served
    with TestClient(create_app(servables["run"], ServeOptions(token="s3cret", name="demo"))) as client:
        assert client.get("/healthz").json() == {"status": "ok", "model": "demo"}
        refused = client.get("/v1/models/demo")
        assert refused.status_code == 401 and "Authorization: Bearer" in refused.json()["error"]
        assert client.get("/v1/models/demo", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/models/demo", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_serve_refuses_artifacts_and_options_it_cannot_take(served, capsys):
    from mbm_keras.cli import main

    root, _ = served
    export_model(str(root / "run"), "tflite", str(root / "tfl"), verbose=False)
    assert main(["serve", "--model", str(root / "tfl")]) == 2
    assert "mbm-keras serve runs a run folder or a SavedModel export, not a tflite file" in capsys.readouterr().err
    for option, value, message in (("--port", "0", "must be a port number from 1 to 65535"),
                                   ("--batch-timeout-ms", "-1", "must be a number of milliseconds"),
                                   ("--max-batch-size", "0", "must be")):
        with pytest.raises(SystemExit):
            main(["serve", "--model", str(root / "run"), option, value])
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_batch_size must be a whole number >= 1"):
        BatchOptions(max_batch_size=0)


@pytest.mark.slow  # a uvicorn process (TensorFlow's start-up)
def test_a_uvicorn_process_serves_then_finishes_in_flight_requests_on_sigterm(served):
    import httpx

    root, _ = served
    proc, base = serve_process("--model", str(root / "demo"))
    port = int(base.rsplit(":", 1)[1])
    try:
        assert httpx.get(f"{base}/v1/models/demo").json()["model_version_status"][0]["state"] == "AVAILABLE"
        metadata = httpx.get(f"{base}/v1/models/demo/metadata").json()["metadata"]
        assert set(metadata["signature_def"]["signature_def"]["serving_default"]["inputs"]) == {"image", "text"}
        assert httpx.get(f"{base}/").text.startswith("<!doctype html>")
        response = httpx.post(f"{base}/v1/models/demo:predict", json={"instances": _instances(root, 2)}, timeout=60)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 2
        upload = httpx.post(f"{base}/predict", files={"image": ("0.png", (root / "img" / "0.png").read_bytes())},
                            data={"text": "a blue thing"}, timeout=60)
        assert upload.status_code == 200 and upload.json()["label"] in ("blue", "red")
        assert 'mbm_keras_requests_total{code="200",endpoint="predict"}' in httpx.get(f"{base}/metrics").text
        in_flight = 'mbm_keras_requests_in_progress{endpoint="predict"} 1.0'
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a request in flight when SIGTERM arrives
            for _ in range(5):  # (sent again if it was answered before the server was seen working on it)
                pending = pool.submit(httpx.post, f"{base}/v1/models/demo:predict",
                                      json={"instances": _instances(root, 32) * 8}, timeout=60)
                while not pending.done() and in_flight not in httpx.get(f"{base}/metrics").text:
                    time.sleep(0.002)  # until the server is answering it (its headers read): not merely sent
                if not pending.done():
                    break
                assert pending.result().status_code == 200
            else:
                pytest.fail("every predict request was answered before /metrics showed it in progress")
            proc.send_signal(signal.SIGTERM)
            assert pending.result().status_code == 200
        # uvicorn finishes the requests in flight, then ends by the signal it got (as an unhandled SIGTERM would).
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read()
    assert "Traceback" not in proc.stderr.read()
    assert f"Serving classification model 'demo' on http://127.0.0.1:{port}" in out, out


def serve_process(*arguments):
    """`(process, base URL)` of `mbm-keras serve ARGUMENTS` on a free port, once it answers /healthz."""
    import httpx

    port = _free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-m", "mbm_keras.cli", "serve", *arguments, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            pytest.fail("the server stopped: " + proc.stderr.read()[-2000:])
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail("the server did not answer /healthz in 2 minutes")


# --- The web page, in headless Chromium ---------------------------------------------------------------------------

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")


def browser(*arguments):
    """Headless Chromium through Selenium, with Debian's chromium and chromium-driver (`make test` installs them;
    Selenium's own driver manager would try to download a driver, which fails offline); `arguments` are more
    Chromium flags."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        message = "headless Chromium and chromedriver are not installed (make test installs them with apt-get as root)"
        if os.environ.get("MBM_KERAS_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,800", *arguments):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


@contextlib.contextmanager
def live_app(app):
    """`app` on a real uvicorn server, in a thread of this process, on a free port: yields its base URL."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_ports(1)[0], log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def live_server(served):
    _, servables = served
    with live_app(create_app(servables["run"], ServeOptions(name="demo"))) as url:
        yield url


def test_the_web_page_predicts_an_upload_and_shows_the_classes_as_bars(served, live_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, _ = served
    chromium = browser()
    try:
        chromium.get(live_server + "/")
        assert chromium.title == "mbm-keras serve: demo"
        chromium.find_element(By.ID, "input-image").send_keys(str(root / "img" / "3.png"))
        chromium.find_element(By.ID, "input-text").send_keys("a red thing")
        chromium.find_element(By.ID, "predict").click()
        WebDriverWait(chromium, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#results .row"))
        rows = chromium.find_elements(By.CSS_SELECTOR, "#results .row")
        shown = [(r.get_attribute("data-class"), r.find_element(By.CLASS_NAME, "value").text,
                  r.find_element(By.CLASS_NAME, "bar").get_attribute("style")) for r in rows]
        os.makedirs(OUTPUT, exist_ok=True)
        chromium.save_screenshot(os.path.join(OUTPUT, "serve-page.png"))
        # A file that is no image: the error, naming the input, where the bars were.
        chromium.find_element(By.ID, "input-image").send_keys(str(root / "train.csv"))
        chromium.find_element(By.ID, "predict").click()
        WebDriverWait(chromium, 30).until(lambda b: b.find_element(By.ID, "error").is_displayed())
        error = chromium.find_element(By.ID, "error").text
        chromium.save_screenshot(os.path.join(OUTPUT, "serve-page-error.png"))
    finally:
        chromium.quit()
    expected = Predictor(str(root / "run"))(image=str(root / "img" / "3.png"), text="a red thing", top=2)
    assert [name for name, _, _ in shown] == [c for c, _ in expected]  # most likely first
    for (_, value, style), (_, p) in zip(shown, expected):
        assert value == f"{100 * p:.1f}%" and f"width: {100 * p:.1f}%" in style
    assert error == "input 'image': not a JPEG, PNG, BMP or GIF file (image)"
