"""Where a network's style term sits: the seed's style term layer by layer (block1_conv1 .. block5_conv1,
the seed's weight) of the photo, NST-100 and a trained network on the bench's held-out photos at 256 px,
and the network's over NST-100's per layer (bench/FF_RESEARCH.md finding 27).

Reads the weights that `bench/ff_bench.py --tag TAG` left in bench/results/ (and its cached NST-100 references):

    PYTHONPATH=. python bench/ff_style_layers.py TAG crayon_hatch,pop_art
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import ff_bench  # noqa: E402

SIZE, STEPS = 256, 100


def layer_terms(extractor, image: np.ndarray, grams) -> np.ndarray:
    """The seed's style term of one [H,W,3] image, one value per style layer (they sum to the term)."""
    from transforms.nst.losses import style_loss
    from transforms.nst.settings import NSTSettings

    features, _ = extractor(image[None].astype("float32"))
    weight = NSTSettings().style_weight / len(grams)
    return np.array([float(style_loss([np.asarray(f, "float32")], [g], weight)[0]) for f, g in zip(features, grams)])


def main(tag: str, styles: str) -> None:
    from transforms.feedforward.network import apply, load_network
    from transforms.feedforward.training import as_float01
    from transforms.nst.extractors import load_extractor
    from transforms.nst.optimize import style_targets

    extractor = load_extractor("vgg19", "imagenet")
    for style in styles.split(","):
        grams = style_targets(extractor, as_float01(ff_bench.load_style(style), SIZE))
        network = load_network(os.path.join(ff_bench.RESULTS, "ff_weights", f"{tag}-{style}.weights.h5"))
        terms = {"photo": [], "nst": [], "network": []}
        for name in ff_bench.HELD_OUT:
            photo = as_float01(ff_bench.load_photo(name), SIZE)
            nst = ff_bench.nst_cached(extractor, name, photo, style, grams, SIZE, STEPS)
            for key, image in (("photo", photo), ("nst", nst), ("network", apply(network, photo))):
                terms[key].append(layer_terms(extractor, image, grams))
        means = {key: np.mean(value, axis=0) for key, value in terms.items()}
        print(f"{tag} {style}: style term per layer, block1_conv1 .. block5_conv1 (mean of {len(ff_bench.HELD_OUT)} photos)")
        for key, value in means.items():
            print(f"  {key:8s}" + "".join(f"{v:10.3g}" for v in value))
        print("  net/NST " + "".join(f"{n / r:10.2f}" for n, r in zip(means["network"], means["nst"])), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
