"""The pipeline: one function per step from a config to an int8 export folder, between the
packages (data, arch, models, schedule, export, quant, nas, eval, deploy) and the CLI.

``tinydet.commands`` parses arguments and renders results; it calls these functions and nothing
below them. Benchmarks and tools call them too. Nothing under ``tinydet`` outside ``commands``
imports ``commands``; nothing in the packages below imports the pipeline.

    export.export_checkpoint(cfg, ckpt, out, plan=..)   checkpoint -> export folder (plan: auto_plan)
    quantize.quantize_folder(folder, calib=.., qat=..)  export folder -> + *.int8.onnx, quant.json
    validate.validate_export(folder, images)            export folder -> the validation report
    eval.evaluate_model(cfg, runner, split)             a model (torch / onnx / export) -> mAP
    eval.evaluate_detections(dets, data=..)             a detections file -> mAP
    search.run_search(config, sram, flash, ..)          config -> searched arch + schedule
    predict.predict(cfg, runner, split)                 a runner on a split -> detections (original pixels)
    images.split_images(cfg, n, size, split=..)         a config's split, letterboxed
"""
