"""`mbm-keras zoo`: the registered modalities, encoders and fusions."""

import argparse

EPILOG_ZOO = """example:
  mbm-keras zoo
  mbm-keras zoo --modality text
"""


def add_parser(sub):
    zoo = sub.add_parser(
        "zoo",
        help="list the modalities, encoders and fusions",
        description="Prints the registered modalities with their encoders, a table of the encoders (modality, input, "
                    "parameters, pretrained weights) and the fusions.",
        epilog=EPILOG_ZOO,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from mbm_keras.modalities import list_modalities

    zoo.add_argument("--modality", choices=list_modalities(), help="only this modality's encoders, e.g. --modality text")
    zoo.set_defaults(func=command)


def command(args):
    from mbm_keras.modalities import get_modality, list_modalities

    rows = zoo_rows(args.modality)
    encoders = [r for r in rows if r["kind"] == "encoder"]
    print(
        f"{'encoder':<20}{'modality':<11}{'input':>12}{'params':>13}{'features':>9}  "
        f"{'pretrained':<11}{'tflite':<18}description"
    )
    for r in encoders:
        print(
            f"{r['name']:<20}{r['modality']:<11}{r['input']:>12}{_count(r['params']):>13}{r['output']:>9}  "
            f"{r['pretrained']:<11}{r['tflite']:<18}{r['description']}"
        )
    modalities = [r for r in rows if r["kind"] == "modality"]
    width = max(len(", ".join(r["encoders"])) for r in modalities) + 2
    print(f"\n{'modality':<12}{'encoders':<{width}}description")
    for r in modalities:
        print(f"{r['name']:<12}{', '.join(r['encoders']):<{width}}{r['description']}")
    fusions = [r for r in rows if r["kind"] == "fusion"]
    if fusions:
        print(f"\n{'fusion':<20}description")
        for r in fusions:
            print(f"{r['name']:<20}{r['description']}")
    sizes = "; ".join(f"{m}: " + ", ".join(f"{k}={v}" for k, v in get_modality(m).ZOO.items())
                      for m in list_modalities())
    print(f"\nParameters at the default sizes ({sizes}).\n"
          "tflite: builtin-op TFLite exports (mbm-keras export --format tflite --quantize none|float16|dynamic|int8); "
          "* int8 unrolls the recurrent layers over their time steps. "
          "† KerasHub encoders: size set by the preset; the TFLite sidecar tokenizes WordPiece presets (BERT-class).")
    return 0


def zoo_rows(modality=None):
    """One dict per registered modality, encoder and fusion, for `mbm-keras zoo`."""
    from mbm_keras import create_encoder, encoder_info, list_encoders, list_fusions
    from mbm_keras.fusion_model import input_specs
    from mbm_keras.fusions import FUSIONS
    from mbm_keras.modalities import get_modality, list_modalities

    order = list_modalities()
    rows = []
    for m in order if modality is None else [modality]:
        cls = get_modality(m)
        rows.append({"kind": "modality", "name": m, "encoders": list_encoders(m), "options": list(cls.OPTIONS),
                     "description": cls.description})
    names = sorted(list_encoders(modality), key=lambda n: (order.index(encoder_info(n)["modality"]), n))
    for name in names:
        info = encoder_info(name)
        shape, _, kwargs = input_specs({"x": info["modality"]}, get_modality(info["modality"]).ZOO)["x"]
        if info.get("preset"):  # its size is the preset's: nothing to build without one
            rows.append({"kind": "encoder", "name": name, "modality": info["modality"], "input": "x".join(map(str, shape)),
                         "params": "preset", "output": "preset", "pretrained": "KerasHub",
                         "tflite": "f32 f16 dyn int8†", "description": info["description"]})
            continue
        encoder = create_encoder(name, info["modality"], shape, offered=kwargs)
        rows.append(
            {
                "kind": "encoder",
                "name": name,
                "modality": info["modality"],
                "input": "x".join(map(str, shape)),
                "params": encoder.count_params(),
                "output": encoder.output.shape[-1],
                "pretrained": "imagenet" if info["pretrained_file"] else "-",
                "tflite": _tflite_support(encoder),
                "description": info["description"],
            }
        )
    if modality is None:
        for name in list_fusions():
            rows.append({"kind": "fusion", "name": name, "description": FUSIONS.meta(name)["description"]})
    return rows


def _count(params):
    return f"{params:,}" if isinstance(params, int) else params


def _tflite_support(encoder):
    """What `mbm-keras export --format tflite` offers for an encoder. Every
    encoder converts to builtin ops at every quantization (tests/test_deploy.py);
    "*": int8 unrolls its recurrent layers over their time steps (the layers
    `deploy.tflite.RECURRENT` names, the ones the export unrolls)."""
    from mbm_keras.deploy.tflite import RECURRENT

    layers = encoder._flatten_layers(include_self=False, recursive=True)
    return "f32 f16 dyn int8" + ("*" if any(type(layer).__name__ in RECURRENT for layer in layers) else "")
