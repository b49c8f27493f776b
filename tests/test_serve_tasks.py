"""`mbm-keras serve` for retrieval (`/search`, `/embed`, the catalogue's files by row id) and transcription
(`/transcribe`): in-process, as a real uvicorn process and in headless Chromium; and `mbm-keras explain` on the
same two runs. Each model trains here, so the module runs in `make test` (test_serve.py covers the server itself
in test-fast)."""

import base64
import csv
import os

import numpy as np
import pytest
from test_serve import OUTPUT, browser, live_app
from test_training import run_config

from mbm_keras.deploy import export_model
from mbm_keras.serve import ServeOptions, Servable, create_app
from mbm_keras.training import train

TestClient = pytest.importorskip("fastapi.testclient").TestClient
pytestmark = pytest.mark.slow  # two trainings and their exports


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A text -> image retrieval run (red or blue: "crimson" or "azure" in the caption), its SavedModel, and an
    index of a catalogue of its validation rows (images with their captions)."""
    from mbm_keras.retrieval.search import build_index

    root = tmp_path_factory.mktemp("search")
    train(str(run_config(root, task__kind="retrieval", task__query=["text"], task__candidate=["image"],
                         task__embedding_dim=8, train__epochs=12)), verbose=0)
    export_model(str(root / "run"), "saved_model", str(root / "export"), verbose=False)
    rows = list(csv.DictReader(open(root / "val.csv")))
    with open(root / "catalogue.csv", "w", newline="") as f:
        csv.writer(f).writerows([["img", "caption", "label"]] + [[r["img"], r["caption"], r["label"]] for r in rows])
    build_index(str(root / "run"), str(root / "catalogue.csv"), str(root / "catalogue.index"), progress=False)
    return root, {"run": Servable(str(root / "run")), "saved_model": Servable(str(root / "export"))}


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A small context transcription run on the demo's sung notes (barely trained: these tests compare the
    server with `transcribe()`, not with the truth), and its SavedModel."""
    from mbm_keras.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("speech")
    write_demo_dataset(str(root / "demo"), seed=0)
    train({
        "data": {"train": str(root / "demo" / "speech_train.csv"), "val": str(root / "demo" / "speech_val.csv"),
                 "columns": {"audio": "audio", "text": "context", "label": "transcript"},
                 "preprocessing": {"sample_rate": 8000, "audio_length": 8000, "text_length": 24}, "batch_size": 16},
        "model": {"audio": "logmel_tcn", "audio_kwargs": {"units": 16, "dilations": [1, 2]}, "text": "cnn",
                  "text_kwargs": {"embed_dim": 8}, "fusion_kwargs": {"units": 16, "num_heads": 2}},
        "task": {"kind": "transcription", "context": "text"},
        "train": {"epochs": 2, "learning_rate": 0.004, "seed": 0},
        "output": str(root / "run"),
    }, verbose=0)
    assert set(Servable(str(root / "run")).inputs) == {"audio", "text"}  # the context model kept (else: retrain)
    export_model(str(root / "run"), "saved_model", str(root / "export"), verbose=False)
    row = next(csv.DictReader(open(root / "demo" / "speech_test.csv")))
    return root, row, {"run": Servable(str(root / "run")), "saved_model": Servable(str(root / "export"))}


def _form(**fields):
    return {k: (None, v) for k, v in fields.items()}


# --- retrieval ----------------------------------------------------------------------------------------------------

def test_search_answers_the_catalogue_rows_of_mbm_keras_search_on_a_run_and_its_export(search):
    from mbm_keras.retrieval.search import search as search_index

    root, servables = search
    index = str(root / "catalogue.index")
    expected = search_index(index, {"text": "a crimson thing"}, run=str(root / "run"), k=3)
    for kind, servable in servables.items():
        with TestClient(create_app(servable, ServeOptions(index=index))) as client:
            response = client.post("/search", files=_form(text="a crimson thing", k="3"))
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["rows"] == 8 and [r["rank"] for r in answer["results"]] == [1, 2, 3]
            for result, (rank, score, row) in zip(answer["results"], expected):
                assert result["score"] == pytest.approx(score, abs=1e-5), kind
                assert result["cells"]["label"] == "red" and result["cells"]["caption"].startswith("a crimson thing")
                assert result["files"] == {"img": {"url": f"/rows/{result['id']}/img", "modality": "image"}}
            assert {r["cells"]["img"] for r in answer["results"]} == {row["img"] for _, _, row in expected}
            # The thumbnail: the catalogue's own file, found by the row id alone.
            first = answer["results"][0]
            image = client.get(first["files"]["img"]["url"])
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            assert image.content == (root / first["cells"]["img"]).read_bytes()
            # A form sent URL-encoded (curl -d) is taken too.
            encoded = client.post("/search", data={"text": "an azure thing", "k": "2"}).json()
            assert [r["cells"]["label"] for r in encoded["results"]] == ["blue", "blue"]


def test_embed_and_the_rest_api_give_each_towers_vectors(search):
    from mbm_keras.retrieval.search import embed, embed_query

    root, servables = search
    query = embed_query(str(root / "run"), {"text": "a crimson thing"})[0]
    candidates, _ = embed(str(root / "run"), str(root / "catalogue.csv"), progress=False)
    image = (root / "img" / "24.png").read_bytes()  # the catalogue's first row
    for servable in servables.values():
        with TestClient(create_app(servable)) as client:
            mine = client.post("/embed", files=_form(text="a crimson thing")).json()
            assert mine["tower"] == "query" and mine["dimensions"] == 8
            np.testing.assert_allclose(mine["embedding"], query, atol=1e-5)
            theirs = client.post("/embed", files={"image": ("24.png", image)}, data={"tower": "candidate"}).json()
            np.testing.assert_allclose(theirs["embedding"], candidates[0], atol=1e-5)
            rest = client.post(f"/v1/models/{os.path.basename(servable.path)}:predict",
                               json={"signature_name": "embed_candidate",
                                     "instances": [{"image": {"b64": base64.b64encode(image).decode()}}]})
            np.testing.assert_allclose(rest.json()["predictions"][0]["embedding"], candidates[0], atol=1e-5)
            meta = client.get(f"/v1/models/{os.path.basename(servable.path)}/metadata").json()["metadata"]
            assert set(meta["signature_def"]["signature_def"]) == {"serving_default", "embed_query", "embed_candidate"}
            assert meta["mbm_keras"]["endpoints"] == ["/search", "/embed"]
            assert client.post("/predict", files=_form(text="a")).status_code == 404  # a classifier's endpoint


def test_search_refuses_bad_requests_and_serves_no_path_but_the_index_rows(search, tmp_path):
    import shutil

    root, servables = search
    index = str(root / "catalogue.index")
    # A catalogue whose first image is then deleted: the row answers 404, not a 500.
    shutil.copytree(root / "img", tmp_path / "img")
    with open(tmp_path / "catalogue.csv", "w", newline="") as f:
        csv.writer(f).writerows([["img"], ["img/0.png"], ["img/1.png"]])
    from mbm_keras.retrieval.search import build_index

    build_index(str(root / "run"), str(tmp_path / "catalogue.csv"), str(tmp_path / "gone.index"), progress=False)
    (tmp_path / "img" / "0.png").unlink()
    cases = [
        ("/search", _form(text="a thing", k="0"), 422, "k must be a whole number from 1 to 1000", "k"),
        ("/search", _form(text="a thing", k="1001"), 422, "k must be a whole number from 1 to 1000", "k"),
        ("/search", _form(colour="red"), 422, "no field 'colour' here; this endpoint takes text, k", "colour"),
        ("/search", _form(text=""), 422, "a query needs at least one of its inputs: text (text)", None),
        ("/search", {"image": ("0.png", b"\x89PNG")}, 422, "no field 'image' here", "image"),
        ("/embed", _form(text="a", tower="side"), 422, "tower must be query or candidate", "tower"),
        ("/embed", {"image": ("x.png", b"not an image")} | _form(tower="candidate"), 422,
         "input 'image': not a JPEG, PNG, BMP or GIF file", "image"),
    ]
    with TestClient(create_app(servables["run"], ServeOptions(index=index)), raise_server_exceptions=False) as client:
        for path, files, status, message, field in cases:
            response = client.post(path, files=files)
            assert response.status_code == status and message in response.json()["error"], (path, response.text)
            assert response.json().get("field") == field
        for url, status, message in (("/rows/8/img", 404, "the index holds rows 0 to 7"),
                                     ("/rows/0/caption", 404, "column 'caption': the rows' files are in img"),
                                     ("/rows/-1/img", 404, "the index holds rows 0 to 7"),
                                     ("/rows/zero/img", 422, None),
                                     ("/rows/0/..%2F..%2Fval.csv", 404, "no endpoint /rows/0/../../val.csv;"),
                                     ("/rows/0/%2Fetc%2Fpasswd", 404, "no endpoint /rows/0//etc/passwd;"),
                                     ("/rows/0/img.", 404, "column 'img.': the rows' files are in img")):
            response = client.get(url)
            assert response.status_code == status, (url, response.text)
            assert message is None or message in response.json()["error"]
        metrics = client.get("/metrics").text
    assert 'endpoint="rows"' in metrics and 'code="500"' not in metrics and "passwd" not in metrics
    with TestClient(create_app(servables["run"], ServeOptions(index=str(tmp_path / "gone.index")))) as client:
        gone = client.get("/rows/0/img")
        assert gone.status_code == 404 and "file is not there any more (img/0.png)" in gone.json()["error"]
        assert client.get("/rows/1/img").status_code == 200
    with TestClient(create_app(servables["run"])) as client:  # no --index: /search says how to give one
        response = client.post("/search", files=_form(text="a"))
        assert response.status_code == 404 and "start it with mbm-keras serve --index" in response.json()["error"]


def test_serve_refuses_an_index_of_another_model_or_for_another_task(search, speech, tmp_path, capsys):
    from mbm_keras.cli import main

    root, servables = search
    (tmp_path / "other").mkdir()
    train(str(run_config(tmp_path / "other", task__kind="retrieval", task__query=["text"], task__candidate=["image"],
                         task__embedding_dim=4, train__epochs=1)), verbose=0)
    with pytest.raises(ValueError, match="holds 8-dimensional vectors and .* embeds 4"):
        create_app(str(tmp_path / "other" / "run"), ServeOptions(index=str(root / "catalogue.index")))
    speech_run = str(speech[0] / "run")
    assert main(["serve", "--model", speech_run, "--index", str(root / "catalogue.index")]) == 2
    assert f"searching an index needs a retrieval model; {speech_run} is a transcription model" in capsys.readouterr().err
    assert main(["serve"]) == 2
    assert "mbm-keras serve needs --model RUN_OR_SAVEDMODEL (or --index INDEX" in capsys.readouterr().err


# --- transcription ------------------------------------------------------------------------------------------------

def test_transcribe_answers_as_mbm_keras_transcribe_on_a_run_and_its_export(speech):
    from mbm_keras.deploy.transcribing import transcribe

    root, row, servables = speech
    clip = root / "demo" / row["audio"]
    decoy = "do re mi fa sol la si do re mi fa sol"  # longer than the others: less likely
    options = [row["transcript"], "la si", decoy]
    for kind, servable in servables.items():
        path = servable.path
        with TestClient(create_app(servable)) as client:
            wav = {"audio": ("clip.wav", clip.read_bytes())}
            greedy = client.post("/transcribe", files=wav, data={"text": row["context"]}).json()
            assert greedy == {"transcript": transcribe(path, str(clip), context=row["context"]), "decoding": "greedy"}
            alone = client.post("/transcribe", files=wav).json()
            assert alone["transcript"] == transcribe(path, str(clip))
            if kind == "run":  # beam search is a run folder's option in transcribe()
                beam = client.post("/transcribe", files=wav, data={"text": row["context"], "beam": "4"}).json()
                assert beam == {"transcript": transcribe(path, str(clip), context=row["context"], beam=4),
                                "decoding": "beam 4"}
            chosen = client.post("/transcribe", files=wav, data={"candidates": "\n".join(options)}).json()
            assert chosen["transcript"] == transcribe(path, str(clip), candidates=options)
            scores = [c["log_likelihood"] for c in chosen["candidates"]]
            assert scores == sorted(scores, reverse=True) and chosen["candidates"][0]["text"] == chosen["transcript"]
            assert {c["text"] for c in chosen["candidates"]} == set(options)
            rest = client.post(f"/v1/models/{os.path.basename(path)}:predict", json={"instances": [
                {"audio": {"b64": base64.b64encode(clip.read_bytes()).decode()}, "text": row["context"]}]})
            assert rest.json()["predictions"][0]["transcript"] == greedy["transcript"]


def test_transcribe_refuses_bad_requests_naming_the_field(speech):
    root, row, servables = speech
    wav = ("clip.wav", (root / "demo" / row["audio"]).read_bytes())
    cases = [
        ({"text": (None, "do re")}, 422, "input 'audio': the clip to transcribe is missing", "audio"),
        ({"audio": ("x.png", b"\x89PNG\r\n\x1a\n0000")}, 422, "input 'audio': not a WAV, FLAC or OGG file", "audio"),
        ({"audio": wav, "beam": (None, "0")}, 422, "beam must be a whole number from 1 to 64", "beam"),
        ({"audio": wav, "candidates": (None, "  \n ")}, 422, "candidates is empty", "candidates"),
        ({"audio": wav, "candidates": (None, "do " * 100)}, 422, "none of the 1 candidate(s) can be aligned",
         "candidates"),
        ({"audio": wav, "speaker": (None, "anna")}, 422, "no field 'speaker' here; this endpoint takes audio, text, "
                                                         "candidates, beam", "speaker"),
    ]
    with TestClient(create_app(servables["run"]), raise_server_exceptions=False) as client:
        for files, status, message, field in cases:
            response = client.post("/transcribe", files=files)
            assert response.status_code == status and message in response.json()["error"], response.text
            assert response.json().get("field") == field
        assert 'code="500"' not in client.get("/metrics").text


# --- real processes and a real browser ----------------------------------------------------------------------------

def test_the_web_page_searches_by_a_typed_query_and_shows_the_thumbnails(search):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mbm_keras.retrieval.index import Index

    root, servables = search
    with live_app(create_app(servables["run"], ServeOptions(index=str(root / "catalogue.index"), name="shop"))) as url:
        chromium = browser()
        try:
            chromium.get(url + "/")
            assert chromium.find_element(By.ID, "section-search").is_displayed()
            assert not chromium.find_element(By.ID, "section-predict").is_displayed()
            assert "The catalogue holds 8 rows." in chromium.find_element(By.ID, "search-note").text
            found = {}
            for word, label in (("crimson", "red"), ("azure", "blue")):
                query = chromium.find_element(By.ID, "search-input-text")
                query.clear()
                query.send_keys(f"a {word} thing")
                k = chromium.find_element(By.ID, "search-k")
                k.clear()
                k.send_keys("3")
                chromium.find_element(By.ID, "search").click()
                WebDriverWait(chromium, 30).until(
                    lambda b: len(b.find_elements(By.CSS_SELECTOR, "#search-results .hit")) == 3
                    and f"a {word} thing" in b.find_element(By.ID, "search-results").text
                    and all(b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
                            for img in b.find_elements(By.CSS_SELECTOR, "#search-results .hit img")))
                hits = chromium.find_elements(By.CSS_SELECTOR, "#search-results .hit")
                found[label] = [(h.get_attribute("data-id"), h.text) for h in hits]
                os.makedirs(OUTPUT, exist_ok=True)
                chromium.save_screenshot(os.path.join(OUTPUT, f"serve-search-{word}.png"))
            # The thumbnails are the rows' own images, drawn at their own size.
            sizes = chromium.execute_script("return [...document.querySelectorAll('#search-results .hit img')]"
                                            ".map(i => [i.naturalWidth, i.naturalHeight])")
        finally:
            chromium.quit()
    rows = Index.load(str(root / "catalogue.index")).rows
    for label, hits in found.items():
        assert all(rows[int(i)]["label"] == label and f"label: {label}" in text for i, text in hits), hits
    from PIL import Image

    assert sizes == [list(Image.open(root / rows[int(i)]["img"]).size) for i, _ in found["blue"]]


def test_the_web_page_searches_by_a_dropped_image(tmp_path):
    """An image query (query tower: the image; candidates: the captions): an image dropped on the search form
    goes to the query's image input and the search runs, its results the captions of the image's colour."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mbm_keras.retrieval.search import build_index

    train(str(run_config(tmp_path, task__kind="retrieval", task__query=["image"], task__candidate=["text"],
                         task__embedding_dim=8, train__epochs=12)), verbose=0)
    rows = list(csv.DictReader(open(tmp_path / "val.csv")))
    with open(tmp_path / "captions.csv", "w", newline="") as f:
        csv.writer(f).writerows([["caption", "label"]] + [[r["caption"], r["label"]] for r in rows])
    build_index(str(tmp_path / "run"), str(tmp_path / "captions.csv"), str(tmp_path / "captions.index"), progress=False)
    red = next(r for r in rows if r["label"] == "red")
    png = base64.b64encode((tmp_path / red["img"]).read_bytes()).decode()
    app = create_app(str(tmp_path / "run"), ServeOptions(index=str(tmp_path / "captions.index")))
    with live_app(app) as url:
        chromium = browser()
        try:
            chromium.get(url + "/")
            chromium.execute_script("document.getElementById('search-k').value = '3'")
            section = chromium.find_element(By.ID, "section-search")
            chromium.execute_script("""
                const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
                const files = new DataTransfer();
                files.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
                document.getElementById("search-inputs").dispatchEvent(
                    new DragEvent("drop", {dataTransfer: files, bubbles: true, cancelable: true}));""", png)
            WebDriverWait(chromium, 30).until(lambda b: section.get_attribute("data-answers") == "1")
            hits = [h.text for h in chromium.find_elements(By.CSS_SELECTOR, "#search-results .hit")]
            chosen = chromium.execute_script("return document.getElementById('search-input-image').files[0].name")
            os.makedirs(OUTPUT, exist_ok=True)
            chromium.save_screenshot(os.path.join(OUTPUT, "serve-search-dropped.png"))
        finally:
            chromium.quit()
    assert chosen == "dropped.png" and len(hits) == 3, hits
    assert all("label: red" in h and "crimson" in h for h in hits), hits


def _press_and_wait(chromium, button):
    """Presses the section's button and waits for its answer (or error): the page counts them in the section's
    data-answers."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    section = chromium.find_element(By.ID, f"section-{button}")
    before = section.get_attribute("data-answers")
    chromium.find_element(By.ID, button).click()
    WebDriverWait(chromium, 30).until(lambda b: section.get_attribute("data-answers") != before)


def test_the_web_page_transcribes_an_uploaded_and_a_recorded_clip(speech):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mbm_keras.deploy.transcribing import transcribe

    root, row, servables = speech
    clip = root / "demo" / row["audio"]
    options = [row["transcript"], "la si"]
    with live_app(create_app(servables["run"], ServeOptions(name="assistant"))) as url:
        # Chromium's fake microphone (a beep) stands in for a person speaking.
        chromium = browser("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")
        try:
            chromium.get(url + "/")
            assert chromium.find_element(By.ID, "section-transcribe").is_displayed()
            chromium.find_element(By.ID, "transcribe-input-audio").send_keys(str(clip))
            chromium.find_element(By.ID, "transcribe-input-text").send_keys(row["context"])
            _press_and_wait(chromium, "transcribe")
            uploaded = chromium.find_element(By.ID, "transcript").get_attribute("textContent")
            chromium.find_element(By.ID, "transcribe-candidates").send_keys("\n".join(options))
            _press_and_wait(chromium, "transcribe")
            assert len(chromium.find_elements(By.CSS_SELECTOR, "#transcribe-candidates-results .candidate")) == 2
            chosen = chromium.find_element(By.ID, "transcript").get_attribute("textContent")
            os.makedirs(OUTPUT, exist_ok=True)
            chromium.save_screenshot(os.path.join(OUTPUT, "serve-transcribe.png"))
            # Record from the (fake) microphone: the recorder stops by itself at the model's 1 s, then transcribe.
            assert chromium.find_element(By.ID, "record").get_attribute("title") == "up to 1 s"
            chromium.find_element(By.ID, "transcribe-candidates").clear()
            chromium.find_element(By.ID, "record").click()
            WebDriverWait(chromium, 10).until(lambda b: "recorded" in b.find_element(By.ID, "recording").text)
            recorded = chromium.find_element(By.ID, "recording").text
            _press_and_wait(chromium, "transcribe")
            error = chromium.find_element(By.ID, "transcribe-error").text
        finally:
            chromium.quit()
    assert uploaded == transcribe(str(root / "run"), str(clip), context=row["context"])
    assert chosen == transcribe(str(root / "run"), str(clip), candidates=options)
    assert recorded == "recorded 1.0 s", recorded
    assert error == "", error  # the recorded WAV decoded and was transcribed


def test_readme_search_and_transcription_lines_run_as_written(tmp_path):
    """The README's block of task endpoints, line by line, from the repository's configs on the demo data: the
    trainings with one epoch (`--epochs 1` added), each server a real uvicorn process in the background (a
    user's second terminal; the search server finds its model through the index alone), each curl against it."""
    import json
    import re
    import shutil
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from mbm_keras.demo import write_demo_dataset

    if not shutil.which("curl"):
        pytest.skip("curl is not installed: the README's lines are curl commands")
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = readme[readme.index("Search, embeddings and transcription"):]
    lines = [line for line in re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines() if line.strip()]
    assert [line.split()[1] for line in lines if line.startswith("mbm-keras")] == [
        "train", "index", "serve", "train", "serve"]
    shutil.copytree(root / "configs", tmp_path / "configs")
    write_demo_dataset(str(tmp_path / "data" / "demo"), seed=0)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               TF_CPP_MIN_LOG_LEVEL="3")
    servers, answers = [], []
    try:
        for line in lines:
            command = line.split("  #")[0].strip()
            if command.startswith("mbm-keras serve"):
                servers.append(subprocess.Popen(["bash", "-c", "exec " + command], cwd=tmp_path, env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                port = re.search(r"--port (\d+)", command).group(1)
                for _ in range(240):
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        assert servers[-1].poll() is None, servers[-1].stderr.read()[-3000:]
                        time.sleep(0.5)
                continue
            if command.startswith("mbm-keras train"):
                command += " --epochs 1"
            if command.startswith("curl"):
                command += " -sS --fail-with-body"
            proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=900)
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            answers.append(proc.stdout)
    finally:
        for server in servers:
            server.terminate()
            server.wait(60)
    printed = [server.stdout.read() for server in servers]
    assert all("Traceback" not in server.stderr.read() for server in servers)
    assert "Serving retrieval model 'search' on http://127.0.0.1:8501 (/search, /embed, 160 catalogue rows;" in printed[0]
    assert "Serving transcription model 'transcription' on http://127.0.0.1:8502 (/transcribe;" in printed[1]
    search, embedding, transcript = (json.loads(answers[i]) for i in (2, 4, 6))
    assert [r["rank"] for r in search["results"]] == [1, 2, 3, 4, 5] and search["rows"] == 160
    assert search["results"][0]["files"]["image"]["url"].startswith("/rows/")
    from mbm_keras.retrieval.index import Index

    first = Index.load(str(tmp_path / "runs" / "search" / "catalogue.index")).rows[0]
    assert (tmp_path / "first.png").read_bytes() == (Path(first["_folder"]) / first["image"]).read_bytes()
    assert embedding["tower"] == "query" and len(embedding["embedding"]) == embedding["dimensions"]
    assert set(transcript) == {"transcript", "decoding"} and transcript["decoding"] == "greedy"


# --- explain on the same runs (trained once for serving and explaining) ------------------------------------------

def _randomized(model):
    """The model's architecture with fresh weights (Adebayo et al. 2018's model-randomization test)."""
    import keras

    keras.utils.set_random_seed(7)
    return keras.models.clone_model(model)


def test_explain_a_retrieval_run_finds_the_query_word_and_fails_on_a_randomized_model(search, capsys):
    import json

    from scipy.stats import spearmanr

    from mbm_keras.cli import main
    from mbm_keras.data import make_dataset
    from mbm_keras.explain import integrated_gradients
    from mbm_keras.explain.matching import match_model
    from mbm_keras.tasks import load_run

    root, _ = search
    report = root / "report"
    assert main(["explain", "--model", str(root / "run"), "--data", str(root / "val.csv"), "--rows", "0,1,2,3",
                 "--out", str(report)]) == 0
    assert "Explained 4 rows: " in capsys.readouterr().out
    summary = json.loads((report / "explanation.json").read_text())
    assert summary["task"] == "retrieval" and summary["towers"] == {"query": ["text"], "candidate": ["image"]}
    rows = list(csv.DictReader(open(root / "val.csv")))
    for e in summary["rows"]:
        assert e["completeness_error"] <= 0.01
        assert sum(e["shapley"].values()) == pytest.approx(e["score"] - e["empty"], abs=1e-5)
        page = (report / f"row-{e['row']}.html").read_text()
        assert page.count("data:image/png;base64,") == 2 and "http" not in page  # Shapley bars, candidate heat map
        words = {w.split(">")[1].split("<")[0]: float(w.split('data-attribution="')[1].split('"')[0])
                 for w in page.split('<span class="word"')[1:]}
        colour = "crimson" if rows[e["row"]]["label"] == "red" else "azure"
        assert max(words, key=words.get) == colour, words  # the query word that makes the match
    # The candidate's heat map of a randomized model ranks the pixels unlike the trained model's.
    model, pre, _ = load_run(str(root / "run"))
    x = next(iter(make_dataset(str(root / "val.csv"), preprocessor=pre.without_labels(), batch_size=1, verbose=False)))
    x = {k: np.asarray(v) for k, v in x.items()}
    trained = integrated_gradients(match_model(model), x, target=0).features["image"].sum(axis=-1).ravel()
    fresh = integrated_gradients(match_model(_randomized(model)), x, target=0).features["image"].sum(axis=-1).ravel()
    assert spearmanr(np.abs(trained), np.abs(fresh)).statistic < 0.5


def test_explain_a_transcription_run_character_by_character_and_fails_on_a_randomized_model(speech, capsys):
    import json

    from scipy.stats import spearmanr

    from mbm_keras.cli import main
    from mbm_keras.data import make_dataset
    from mbm_keras.deploy.transcribing import transcribe
    from mbm_keras.explain import integrated_gradients
    from mbm_keras.explain.transcripts import transcript_attributions
    from mbm_keras.tasks import load_run

    root, row, _ = speech
    report = root / "report"
    test_csv = root / "demo" / "speech_test.csv"
    assert main(["explain", "--model", str(root / "run"), "--data", str(test_csv), "--rows", "0",
                 "--out", str(report)]) == 0
    summary = json.loads((report / "explanation.json").read_text())
    e = summary["rows"][0]
    assert summary["task"] == "transcription" and summary["features"] == ["audio", "text"]
    assert e["transcript"] == transcribe(str(root / "run"), str(root / "demo" / row["audio"]), context=row["context"])
    assert e["label"] == row["transcript"] and "".join(c["character"] for c in e["characters"]) == e["transcript"]
    assert e["characters"], "the run writes nothing: nothing to explain (train it longer)"
    for c in e["characters"]:
        assert c["completeness_error"] <= 0.01
        assert sum(c["shapley"].values()) == pytest.approx(c["log_prob"] - c["empty"], abs=1e-4)
    # Without the transcript column: explained all the same, with no label.
    with open(root / "unlabelled.csv", "w", newline="") as f:
        csv.writer(f).writerows([["audio", "context"], [str(root / "demo" / row["audio"]), row["context"]]])
    assert main(["explain", "--model", str(root / "run"), "--data", str(root / "unlabelled.csv"), "--out",
                 str(root / "unlabelled")]) == 0
    unlabelled = json.loads((root / "unlabelled" / "explanation.json").read_text())["rows"][0]
    assert unlabelled["label"] is None and unlabelled["transcript"] == e["transcript"]
    page = (report / "row-0.html").read_text()
    tokens = page.split("(context tokens)")[1].split("</tr>")[0].count("<th>") - 1
    assert tokens == len(row["context"].replace(",", " ").split())  # the context's words, punctuation dropped
    assert page.count("data:image/png;base64,") == 1 and page.count('<td class="cell"') == len(e["characters"]) * tokens
    # The first character's attribution per audio frame: a randomized model's ranks the frames differently. Signed:
    # the magnitudes of integrated gradients (gradient times input) follow the clip's own energy whatever the
    # weights (absolute values correlate at 0.8-0.9 on the demo's trained run; Adebayo et al. found the same).
    model, pre, _ = load_run(str(root / "run"))
    vocabulary = pre.labels.vocabulary
    x = next(iter(make_dataset(str(test_csv), preprocessor=pre.without_labels(), batch_size=1,
                               missing_modalities=["text"], verbose=False)))
    x = {k: np.asarray(x[k]) for k in ("audio", "text")}
    explained = transcript_attributions(model, x, vocabulary)
    frame = explained.characters[0][1]
    target = frame * int(model.output.shape[-1]) + int(model.predict(x, verbose=0)[0, frame].argmax())
    fresh = integrated_gradients(_randomized(model), x, target=target).features["audio"].sum(axis=1)
    trained = explained.frames("audio")[0]
    heard = (trained != 0) | (fresh != 0)  # the frames within the output frame's receptive field (the rest are 0)
    assert heard.sum() >= 10 and spearmanr(trained[heard], fresh[heard]).statistic < 0.5, (heard.sum(), trained, fresh)
