"""A live one-shot demo in the browser: draw a character or drop in photos, and watch the network decide.

    python -m siamese_jax.demo [--workdir=DIR] [--host=127.0.0.1] [--port=7860] [--checkpoint=best]

Serves a local Gradio app for any trained workdir (Omniglot, LFW, your own folders), adapting to what
the run is; without --workdir, for the model shipped with the package (siamese_jax.pretrained):

- One-shot classification: pick a ready-made support set (Omniglot's 20 official runs, random N-way
  tasks) or upload one image per class; draw the query (runs of drawn symbols) or upload it, or take
  a real query of the set, whose answer is then shown. Every class's probability comes back ranked,
  with the query as the model sees it. A support set is encoded once; a query then costs one encoder
  pass and the head.
- Compare two images: the probability and the logit, and for face runs same or different at the
  threshold the run's evaluation chose.
- Identify: a gallery of one named photo per person and a query photo, the people ranked.

Images are converted exactly as `predict` converts them (predict.Predictor, the same code; a drawing is
saved as a PNG and read back). Scripts call it through gradio_client: `/classify` (a query image and a
support set name, run01 ... run20, or a folder path) and `/compare` (two images), see
docs/your_dataset.md. It binds to 127.0.0.1 unless --host says otherwise, never shares a public link,
and refuses uploads over MAX_UPLOAD_BYTES or images over data.images.MAX_IMAGE_PIXELS pixels.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from siamese_jax import predict, pretrained
from siamese_jax import workdir as workdir_files
from siamese_jax.data import images as image_files
from siamese_jax.errors import DataError, UserError
from siamese_jax.experiments.base import SupportSet

FLAGS = flags.FLAGS
MAX_UPLOAD_BYTES = 10 * 2**20  # Gradio refuses larger uploads before they reach the model.
OWN = "your own (upload below)"
# Gradio keeps every upload until the server stops; a demo left running would fill its disk.
KEEP_UPLOADS_S = 600


def define_flags() -> None:
    """The command's flags; defined only when run as a command, so the module imports anywhere."""
    flags.DEFINE_string("workdir", None, "Directory of a training run (holds config.json and checkpoints/), or a "
                        f"packed model; default: the shipped model, {pretrained.shipped_description()}.")
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which parameters to use.")
    flags.DEFINE_string("host", "127.0.0.1", "Address to serve on: 127.0.0.1 (this machine only), or 0.0.0.0 for "
                        "every interface of this machine.")
    flags.DEFINE_integer("port", 7860, "Port to serve on.")
    flags.DEFINE_integer("keep_uploads_s", KEEP_UPLOADS_S, "Seconds an uploaded or drawn image stays in Gradio's "
                         "cache before it is deleted (checked every minute at most); 0 keeps them all.")


class Demo:
    """A workdir's model, its conversion of images (predict's), and its ready-made support sets, encoded once each."""

    def __init__(self, workdir: str, checkpoint: str = "best"):
        self.predictor = predict.Predictor(workdir, checkpoint)
        self.workdir = workdir
        self.description = pretrained.describe(workdir)
        try:
            self.builders = self.predictor.experiment.support_sets()
            self.no_sets_because = None
        except DataError as error:  # Their data is not here, nor downloadable: the user's own sets still work.
            self.builders, self.no_sets_because = {}, str(error)
        self.strokes = self.predictor.experiment.input_style == "strokes"
        self._encoded: dict[str, tuple[SupportSet, object]] = {}

    def unknown(self, name: str) -> UserError:
        """The error for a support set that is neither a ready-made one nor a folder."""
        return UserError(f"unknown support set {name!r}: use one of {', '.join(self.builders) or '(none here)'}, or "
                         "a folder of one image (or one subfolder of images) per class")

    def support_set(self, name: str) -> tuple[SupportSet, object]:
        """A ready-made support set by name, and its candidates' embeddings (encoded on first use)."""
        if name not in self.builders:
            raise self.unknown(name)
        if name not in self._encoded:
            support = self.builders[name]()
            self._encoded[name] = (support, self.predictor.embed(support.images))
        return self._encoded[name]

    def convert_file(self, path) -> np.ndarray:
        """Model input of an image file, as predict converts it."""
        if path is None:
            raise UserError("no image given: upload one")
        return self.predictor.convert(Path(path))

    def convert_drawing(self, drawing) -> np.ndarray:
        """Model input of a sketchpad drawing (an RGBA array, or Gradio's dict with its 'composite'): saved as a
        PNG and converted as predict converts a file."""
        from PIL import Image

        array = drawing.get("composite") if isinstance(drawing, dict) else drawing
        if array is None:
            raise UserError("the canvas is empty: draw a character first")
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(array, np.uint8)).save(buffer, format="PNG")
        gray = np.asarray(image_files.open_image(buffer.getvalue(), "the drawing").convert("L"))
        if np.ptp(gray) < 32:  # Nothing drawn: a blank page (or a faint speck).
            raise UserError("the canvas is empty: draw a character first")
        with tempfile.NamedTemporaryFile(suffix=".png") as file:
            file.write(buffer.getvalue())
            file.flush()
            return self.convert_file(file.name)

    def classify(self, query: np.ndarray, support: str) -> list[dict]:
        """The classes of a support set (a ready-made set's name, or a folder as predict takes it) ranked by their
        same-class probability against a model-input query, best first."""
        if support in self.builders:  # Its candidates are encoded already: the query alone is.
            candidates, embeddings = self.support_set(support)
            return self.predictor.rank(self.predictor.embed(query[None])[..., 0, :], embeddings, list(candidates.names),
                                       [1] * len(candidates.names))
        if not Path(support).expanduser().is_dir():
            raise self.unknown(support)
        return self.predictor.classify_input(query, Path(support).expanduser())

    def classify_files(self, query: np.ndarray, files) -> list[dict]:
        """The classes of uploaded files (one image per class, named after it) ranked against a model-input query."""
        files = [Path(f) for f in files or []]
        if len(files) < 2:
            raise UserError(f"a support set needs two or more classes, one image each; got {len(files)}")
        names = [f.stem for f in files]
        if len(set(names)) < len(names):
            raise UserError("two support images have the same name: each class needs its own name")
        embeddings = self.predictor.embed(np.stack([query] + [self.convert_file(f) for f in files]))
        return self.predictor.rank(embeddings[..., 0, :], embeddings[..., 1:, :], names, [1] * len(names))

    def compare(self, a, b) -> dict:
        """predict compare of two image files."""
        if a is None or b is None:
            raise UserError("give two images to compare")
        return self.predictor.compare(Path(a), Path(b))


def as_display(images: np.ndarray, strokes: bool) -> list[np.ndarray]:
    """Model inputs as pictures for a person: strokes dark on white, photos as they are."""
    return [255 - image if strokes else image for image in images]


def build_app(demo: Demo, keep_uploads_s: int = KEEP_UPLOADS_S):
    """The Gradio app of a Demo: its tabs, and the /classify and /compare endpoints for scripts; its uploads
    are deleted once `keep_uploads_s` old (0: kept until the server stops)."""
    import gradio as gr

    def user_errors(fn):
        def wrapped(*args):
            try:
                return fn(*args)
            except UserError as error:
                raise gr.Error(str(error)) from None
        wrapped.__name__ = fn.__name__
        return wrapped

    @user_errors
    def show_support(name):
        if name == OWN:
            return gr.update(value=[]), gr.update(choices=["none"], value="none")
        candidates, _ = demo.support_set(name)
        pictures = [(picture, label) for picture, label in zip(as_display(candidates.images, demo.strokes),
                                                                  candidates.names)]
        queries = ["none"] + [f"query {i + 1}" for i in range(len(candidates.queries))]
        return pictures, gr.update(choices=queries, value="none")

    @user_errors
    def classify_ui(name, own_files, drawing, upload, real_query):
        answer = None
        if real_query and real_query != "none" and name != OWN:
            candidates, _ = demo.support_set(name)
            index = int(real_query.split()[-1]) - 1
            query, answer = candidates.queries[index], candidates.names[candidates.answers[index]]
        elif upload is not None:
            query = demo.convert_file(upload)
        else:
            query = demo.convert_drawing(drawing)
        ranking = demo.classify_files(query, own_files) if name == OWN else demo.classify(query, name)
        chosen = ranking[0]["class"]
        verdict = f"**{chosen}**, probability {ranking[0]['score']:.3f}"
        if answer is not None:
            verdict += ": right" if chosen == answer else f": wrong (the answer is **{answer}**)"
        seen = as_display(query[None], demo.strokes)[0]
        zoom = max(1, 224 // seen.shape[0])  # Each model pixel as a block, so that 28 x 28 can be seen.
        seen = np.repeat(np.repeat(seen, zoom, axis=0), zoom, axis=1)
        return {r["class"]: r["score"] for r in ranking}, seen, verdict

    @user_errors
    def compare_ui(a, b):
        result = demo.compare(a, b)
        text = f"same-class probability **{result['probability']:.4f}** (logit {result['logit']:.3f})"
        if "same" in result:
            text += (f"; **{'same' if result['same'] else 'different'}** at the threshold {result['threshold']:.3f} "
                     "the run's evaluation chose")
        return text

    @user_errors
    def identify_ui(files, query):
        return {r["class"]: r["score"] for r in demo.classify_files(demo.convert_file(query), files)}

    @user_errors
    def classify_api(query, support):
        """Each class of `support` (run01 ... run20, another ready-made set, or a folder) with its probability."""
        ranking = demo.classify(demo.convert_file(query), support)
        return {r["class"]: r["score"] for r in ranking}

    @user_errors
    def compare_api(a, b):
        """The same-class probability and logit of two images (and same/different for face runs)."""
        return demo.compare(a, b)

    sets = list(demo.builders)
    delete_cache = (min(60, keep_uploads_s), keep_uploads_s) if keep_uploads_s > 0 else None
    with gr.Blocks(title="siamese_jax one-shot demo", delete_cache=delete_cache) as blocks:
        gr.Markdown(f"## One-shot learning with a siamese network\nModel: `{demo.workdir}`: {demo.description}. "
                    "Give the network one example of each class, then a new image: it ranks the classes by the "
                    "probability that the image shows each."
                    + (f"\n\nNo ready-made support sets: {demo.no_sets_because}" if demo.no_sets_because else ""))
        with gr.Tab("One-shot classification"):
            with gr.Row():
                with gr.Column():
                    support = gr.Dropdown(sets + [OWN], value=(sets or [OWN])[0], label="Support set",
                                          elem_id="support-set")
                    own = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                  label="Your own support set: one image per class, named after the class (used "
                                  "when 'your own' is picked)")
                    gallery = gr.Gallery(label="Candidates", columns=3, height="auto", elem_id="candidates")
                with gr.Column():
                    drawing = (gr.Sketchpad(type="numpy", label="Draw the query", canvas_size=(420, 420),
                                            brush=gr.Brush(default_size=20, colors=["#000000"]), elem_id="sketch")
                               if demo.strokes else gr.State(None))
                    upload = gr.File(file_types=["image"], type="filepath", label="...or upload the query")
                    real = gr.Dropdown(["none"], value="none", label="...or take a real query of the set")
                    run = gr.Button("Classify", variant="primary", elem_id="classify")
                with gr.Column():
                    verdict = gr.Markdown(elem_id="verdict")
                    seen = gr.Image(label="The query as the model sees it", type="numpy", interactive=False, height=220)
                    scores = gr.Label(num_top_classes=50, label="Each class's probability, ranked", elem_id="scores")
            support.change(show_support, [support], [gallery, real], api_visibility="private")
            blocks.load(show_support, [support], [gallery, real], api_visibility="private")
            run.click(classify_ui, [support, own, drawing, upload, real], [scores, seen, verdict],
                      api_visibility="private")
        with gr.Tab("Compare two images"):
            with gr.Row():
                first = gr.File(file_types=["image"], type="filepath", label="First image")
                second = gr.File(file_types=["image"], type="filepath", label="Second image")
            compared = gr.Markdown()
            gr.Button("Compare", variant="primary").click(compare_ui, [first, second], [compared],
                                                          api_visibility="private")
        with gr.Tab("Identify"):
            with gr.Row():
                people = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                 label="Gallery: one image per person (or class), named after them")
                query = gr.File(file_types=["image"], type="filepath", label="Query")
            ranked = gr.Label(num_top_classes=50, label="Ranked")
            gr.Button("Identify", variant="primary").click(identify_ui, [people, query], [ranked],
                                                           api_visibility="private")
        with gr.Row(visible=False):  # The scripting API: gradio_client's /classify and /compare.
            # Files, not gr.Image: the demo's own reader converts them and says what is wrong with a bad one.
            api_query, api_support = gr.File(type="filepath"), gr.Textbox()
            api_a, api_b = gr.File(type="filepath"), gr.File(type="filepath")
            api_scores, api_compared = gr.JSON(), gr.JSON()
            # Answered at once, not through the queue: a query takes milliseconds of model time.
            gr.Button().click(classify_api, [api_query, api_support], [api_scores], api_name="classify", queue=False)
            gr.Button().click(compare_api, [api_a, api_b], [api_compared], api_name="compare", queue=False)
    return blocks


def main(argv):
    """Loads the workdir's model and serves the app until interrupted."""
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        workdir = pretrained.default_workdir(FLAGS.workdir)
        demo = Demo(workdir, FLAGS.checkpoint)
    except DataError as error:
        if not FLAGS.workdir:
            sys.exit(f"error: the shipped model cannot be read ({error}): reinstall the package, or pass "
                     "--workdir=DIR of a training run")
        if (Path(workdir) / workdir_files.CONFIG).exists():
            sys.exit(f"error: {workdir} has no trained checkpoint to show ({error}); train one first: "
                     f"python -m siamese_jax.train --config=configs/omniglot_cpu.py --workdir={workdir}")
        sys.exit(f"error: {error}; train one with python -m siamese_jax.train --config=configs/omniglot_cpu.py "
                 f"--workdir={workdir}")
    except UserError as error:
        sys.exit(f"error: {error}")
    if demo.no_sets_because:
        print(f"no ready-made support sets ({demo.no_sets_because}): the page takes your own", flush=True)
    if FLAGS.keep_uploads_s < 0:
        sys.exit(f"error: --keep_uploads_s={FLAGS.keep_uploads_s} must be >= 0 (0 keeps every upload)")
    build_app(demo, FLAGS.keep_uploads_s).launch(server_name=FLAGS.host, server_port=FLAGS.port, share=False,
                           max_file_size=MAX_UPLOAD_BYTES, show_error=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
