"""What the held-out style term can be, whatever network is trained (bench/FF_RESEARCH.md finding 31):

- **objective**: each held-out photo's pixels optimised directly for the networks' training objective (the seed's
  terms at the calibrated style weight, the structure and colour terms of FFSettings()), 100 seed-setting Adam
  steps from the photo, as NST-100 is: what that objective allows on these photos, so the gap between it and
  a trained network is the network's (capacity, training budget, generalisation), not the objective's;
- **the face guard's own cost**: NST-100's outputs written with `--ff-keep-faces` 0.5 and 0.7.

The seed's style term over NST-100's on the same pairs (ratio of the means), gray SSIM, faces MTCNN finds again.
NST-100 references come from bench/results/ff_nst_cache (`ff_bench.nst_cached`: computed once when missing):

    PYTHONPATH=. python bench/ff_bounds.py crayon_hatch,wave_bands
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import ff_bench  # noqa: E402

SIZE, STEPS = 256, 100


def optimise_objective(extractor, photo, grams, style_weight, settings, steps=STEPS):
    """`photo` ([H,W,3] in [0,1]) after `steps` seed-setting Adam steps on the training objective, float32."""
    import keras
    import tensorflow as tf

    from transforms.feedforward.training import loss_settings
    from transforms.nst.losses import color_loss, laplacian_loss, loss_terms
    from transforms.nst.optimize import content_targets
    from transforms.nst.settings import NSTSettings

    seed = NSTSettings()
    weights = loss_settings(settings, style_weight)
    features = extractor.model_for("float32")
    image, original = tf.Variable(photo[None].copy()), tf.constant(photo[None])
    targets = [tf.constant(t[None]) for t in content_targets(extractor, photo)]
    gram_tensors = [tf.constant(g) for g in grams]
    adam = keras.optimizers.Adam(seed.learning_rate, beta_1=seed.beta_1, beta_2=seed.beta_2, epsilon=seed.epsilon)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            total = loss_terms(extractor.split, weights, lambda x: features(x, training=False), image, targets,
                               gram_tensors)["total"]
            total += laplacian_loss(image, original, settings.laplacian_pool, settings.laplacian_weight)
            total = tf.reduce_sum(total + color_loss(image, original, settings.color_pool, settings.color_weight))
        adam.apply_gradients([(tape.gradient(total, image), image)])
        image.assign(tf.clip_by_value(image, 0.0, 1.0))

    for _ in range(steps):
        step()
    return image.numpy()[0]


def main(styles: str) -> None:
    from transforms import quality
    from transforms.feedforward.evaluation import seed_losses
    from transforms.feedforward.settings import FFSettings
    from transforms.feedforward.training import _Crops, as_float01, calibrated_style_weight, prepare_photos
    from transforms.nst.extractors import load_extractor
    from transforms.nst.optimize import style_targets

    settings = FFSettings()
    extractor = load_extractor("vgg19", "imagenet")
    detector = quality.FaceDetector()
    photos = [as_float01(ff_bench.load_photo(name), SIZE) for name in ff_bench.HELD_OUT]
    faces = [detector(photo) for photo in photos]
    first_batch = _Crops(prepare_photos(list(ff_bench.training_photos().values()), settings), settings)[0]
    print(f"{ff_bench.cpu_name()}; held out {', '.join(ff_bench.HELD_OUT)} at {SIZE} px; faces in them: "
          f"{sum(map(len, faces))}", flush=True)
    for style in styles.split(","):
        grams = style_targets(extractor, as_float01(ff_bench.load_style(style), SIZE))
        weight = calibrated_style_weight(extractor, first_batch, grams, settings)  # as training sets it
        nst = [ff_bench.nst_cached(extractor, name, photo, style, grams, SIZE, STEPS)
               for name, photo in zip(ff_bench.HELD_OUT, photos)]
        objective = [optimise_objective(extractor, photo, grams, weight, settings) for photo in photos]
        guarded = lambda images, keep: [quality.keep_faces(i, p, f, keep)  # noqa: E731
                                        for i, p, f in zip(images, photos, faces)]
        methods = {"NST-100": nst, "NST-100, guard 0.5": guarded(nst, 0.5), "NST-100, guard 0.7": guarded(nst, 0.7),
                   "objective": objective, "objective, guard 0.7": guarded(objective, 0.7)}
        style_terms = {m: np.mean([seed_losses(extractor, i, p, grams)["style"] for i, p in zip(images, photos)])
                       for m, images in methods.items()}
        print(f"{style} (style weight {weight:.3g}): style term / NST-100's, gray SSIM, faces found again", flush=True)
        for method, images in methods.items():
            ssim = np.mean([quality.gray_ssim(i, p) for i, p in zip(images, photos)])
            kept = sum(quality.faces_kept(f, detector(i)) for i, f in zip(images, faces))
            print(f"  {method:22s} {style_terms[method] / style_terms['NST-100']:5.2f}x  {ssim:.3f}  {kept}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
