"""`det export-onnx` / `det export onnx`: export a dense (RetinaNet, FCOS, ATSS, GFL, YOLOX) or two-stage (Faster / Mask /
Cascade R-CNN) checkpoint to ONNX."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from detcli.cli._common import err_console, fail, handle_errors, print_json

app = typer.Typer(help="Export a checkpoint to a deployment format.", no_args_is_help=True)


@handle_errors
def export_onnx(
    args: Annotated[list[str], typer.Argument(help="[PRESET] CHECKPOINT: a det checkpoint carries its config; MMDetection / torchvision checkpoints need the PRESET; `PRESET zoo` uses its published weights.", metavar="[PRESET] CHECKPOINT")],
    output_file: Annotated[Optional[str], typer.Option("--output-file", "-o", help="The .onnx file to write (default: <checkpoint stem>.onnx).")] = None,
    shape: Annotated[Optional[tuple[int, int]], typer.Option("--shape", help="H W of the traced input (default: the preprocessed input image's size).")] = None,
    opset_version: Annotated[Optional[int], typer.Option("--opset-version", help="ONNX opset (default: the lowest that has every op used: 11 for the dense detectors, 16 for the two-stage ones).")] = None,
    dynamic_export: Annotated[bool, typer.Option("--dynamic-export", help="Dynamic batch, height and width.")] = False,
    skip_postprocess: Annotated[bool, typer.Option("--skip-postprocess", help="Export the raw head outputs (no NMS; dense detectors only).")] = False,
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override config keys: a.b.c=V.")] = None,
    input_img: Annotated[Optional[str], typer.Option("--input-img", help="Image to trace with and verify on (default: the first test image).")] = None,
    test_img: Annotated[Optional[str], typer.Option("--test-img", help="Another image to verify on.")] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Compare ONNX Runtime with PyTorch; fail past the tolerance.")] = True,
    simplify: Annotated[bool, typer.Option("--simplify", help="Simplify the graph with onnxslim.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the export summary as one JSON object on stdout.")] = False,
) -> None:
    """Export RetinaNet / FCOS / ATSS / GFL / YOLOX / Faster, Mask and Cascade R-CNN to ONNX with NMS in the graph (outputs dets (B, N, 5)
    and labels (B, N), plus masks (B, N, H, W) bool at the input size for the mask models)."""
    from detcli.config import apply_overrides, check_schema, load_config, resolve_preset_path
    from detcli.engine.onnx_export import ParityError
    from detcli.engine.onnx_export import export_onnx as run_export

    if len(args) not in (1, 2):
        raise fail(f"expected [PRESET] CHECKPOINT, got {len(args)} arguments: {' '.join(args)}")
    checkpoint = args[-1]
    cfg = None
    if len(args) == 2:
        cfg = load_config(str(resolve_preset_path(args[0])), cfg_options)
    elif cfg_options:
        from detcli.engine import load_checkpoint_config

        cfg = apply_overrides(load_checkpoint_config(checkpoint), cfg_options)
        check_schema(cfg, checkpoint)
    with err_console.status("exporting to ONNX"):
        try:
            result = run_export(
                cfg, checkpoint, output_file=output_file, shape=shape, opset_version=opset_version,
                dynamic_export=dynamic_export, skip_postprocess=skip_postprocess, input_img=input_img,
                test_img=test_img, verify=verify, simplify=simplify,
            )
        except ParityError as e:
            err_console.print(e.report.table(), markup=False, highlight=False)
            raise
    summary = {
        "output_file": str(result.output_file), "model": result.model_type, "opset_version": result.opset_version,
        "input_shape": list(result.input_shape), "dynamic": result.dynamic, "outputs": result.outputs,
        "simplified": result.simplified, "seconds": round(result.seconds, 2),
        "verify": None if result.verify is None else [vars(r) for r in result.verify.rows],
    }
    if json_out:
        print_json(summary)
        return
    if result.verify is not None:
        err_console.print(result.verify.table(), markup=False, highlight=False)
    typer.echo(f"{result.output_file}")


app.command("onnx")(export_onnx)
