"""The paper presets: each method's authors' published training regime, every value cited.

`PAPER` maps a method's registry name to its `PaperPreset` (cldash.config.presets): the optimizer,
learning rate, schedule, warm-up, weight decay, batch size, gradient clipping, loss masking,
adapted module roles and the method's own options that the authors' released code (or, where
there is none, the paper) uses. Each value is a `Cited(value, source, note)`:

- ``source`` names the file of the authors' repository it was read from, as
  ``OWNER/REPO/path/file: what the file says``, or a section of the paper;
- ``note`` says how the value was translated to our tiny backbones (a 2-layer, width-64 ViT on
  8x8 digits; a tiny GPT-2), where it had to be.

The translation rules, the same for every method:

- epochs of a data set we do not have do not carry over: ``steps_per_task`` stays at the common
  regime's 300 unless the authors give iterations per task (CoDyRA's 500);
- batch sizes of 7B-model runs stay at our 64 (said in the notes); smaller models' batch sizes
  carry over as they are;
- learning rates are the authors' AdamW / Adam / SGD rates, unchanged;
- a warm-up given in steps of a run much longer than ours becomes its share of that run
  (``warmup_ratio``), with the arithmetic in the note;
- a transformers ``TrainingArguments`` default that the authors' script leaves in force
  (``max_grad_norm`` 1.0, ``weight_decay`` 0) is cited to the script that leaves it, and noted;
- what cannot carry over at all (a linear-decay schedule, a rank wider than our 64-wide layers,
  an option our reconstruction does not have) is a sentence in the preset's ``notes``;
- only values the authors' code or paper gives are set; everything else stays at the common
  regime (RunConfig's defaults).

``targets`` holds module roles of `cldash.config.presets.ROLE_PATTERNS` ("q", "k", "v", "o", "mlp"),
not name patterns. ``policy`` is never set: the single-task methods' authors define no
task-boundary policy, and the continual methods fix their own.

`AIDS` holds TRACE's settings (arXiv 2310.06762, code BeyonderXX/TRACE) for the two run
options that are not methods, replay and EWC, keyed "replay" and "ewc". Their ``values`` are
only the aid's own RunConfig fields, so that they combine with any method's regime; TRACE's
training regime (full fine-tuning of LLaMA-2-7B) is in their notes.

LoRA-GA's preset uses the authors' form of the init (`init_form` "authors"), EBLoRA's grows F from
the task-start gradient (`basis_gradient` "task_start"), and CoDyRA's keeps the code's absolute
kappa_max at the code's learning rate (the same ratio kappa_max / lr = 10 as `kappa_per_lr` 10).
"""

from __future__ import annotations

from cldash.config.presets import Cited, PaperPreset

_CODYRA = "Artificer-AI-Lab/CoDyRA/"
_EBLORA = "haodotgu/EBLoRA/"
_UCIT = _EBLORA + "configs/model_configs/LLaVA/UCIT/"
_OLORA = "cmnfriend/O-LoRA/"
_INFLORA = "liangyanshuo/InfLoRA/"
_SDLORA = "WuYichen-97/SD-Lora-CL/"
_LORAGA = "Outsider565/LoRA-GA/"
_PISSA = "GraphPKU/PiSSA/"
_DORA = "NVlabs/DoRA/commonsense_reasoning/"
_ADALORA = "QingruZhang/AdaLoRA/"
_GIFT = "savadikarc/gift/"
_LORETTA = "yifanycc/loretta/"
_TRACE = "BeyonderXX/TRACE/"

_EPOCHS = "epochs of a data set we do not have do not carry over, so steps_per_task stays at the common 300"
_HF_CLIP = "transformers' TrainingArguments default max_grad_norm 1.0 applies"


PAPER: dict[str, PaperPreset] = {
    "codyra": PaperPreset(
        paper="CoDyRA (Lu et al.), arXiv 2412.01004",
        code="Artificer-AI-Lab/CoDyRA",
        values={
            "optimizer": Cited("adamw", _CODYRA + "models/codyra.py: train_model builds torch.optim.AdamW"),
            "lr": Cited(5e-4, _CODYRA + "runner_codyra.sh: LR=5e-4"),
            "lr_schedule": Cited("cosine", _CODYRA + "models/codyra.py: utils.cosine_lr over the task's iterations "
                                 "(utils.py: 0.5 (1 + cos(pi e / es)) lr)"),
            "warmup_steps": Cited(0, _CODYRA + "main.py: --warmup_length default 0"),
            "weight_decay": Cited(0.0, _CODYRA + "main.py: --wd default 0.0"),
            "steps_per_task": Cited(500, _CODYRA + "runner_codyra.sh: ITERATIONS=500 (models/codyra.py trains that "
                                    "many iterations on each task, cycling its loader)",
                                    note="iterations per task carry over as they are (the common regime is 300)"),
            "batch_size": Cited(64, _CODYRA + "main.py: --batch_size default 64"),
            "max_grad_norm": Cited(0.0, _CODYRA + "models/codyra.py: train_model steps the optimizer without "
                                   "clipping"),
            "loss_classes": Cited("current", _CODYRA + "models/codyra.py: train_model sets the logits of the "
                                  "classes seen before to -inf ahead of the cross-entropy"),
            "targets": Cited(("q", "k", "v", "o", "mlp"), _CODYRA + "runner_codyra.sh: TARGET_MODULES=\"qkvoinout\" "
                             "(main.py LORA_MAPPING: q_proj, k_proj, v_proj, out_proj, ffn_in, ffn_out)"),
            "method.rank": Cited(16, _CODYRA + "runner_codyra.sh: RANK=16"),
            "method.kappa_max": Cited(0.005, _CODYRA + "runner_codyra.sh: MAX_KAPPA=0.005"),
            "method.dense_fraction": Cited(0.5, _CODYRA + "runner_codyra.sh: DENSE_ITERS=0.5"),
            "method.levels": Cited(50, _CODYRA + "main.py: --lambda_num default 50"),
            "method.beta2": Cited(0.9999, _CODYRA + "models/codyra.py: AdamW betas=(0.9, 0.9999)"),
        },
        notes=(
            "The authors adapt both of CLIP's encoders (runner_codyra.sh: TARGET_ENCODER=all) and add a text-side "
            "cross-entropy to the loss (models/codyra.py: loss_ce_t); our backbones have one encoder and a linear "
            "head, so only the image side carries over.",
            "The released loop soft-thresholds the gates by kappa itself after every step (models/codyra.py: "
            "p -= threshold), not by the learning rate times kappa; an option for a threshold relative to the "
            "learning rate exists (kappa_per_lr: 10 is the code's 0.005 / 5e-4), and this preset keeps the code's "
            "absolute kappa at the code's learning rate, which is the same.",
            "The authors train 16 shots per class (main.py: --num_shots 16) for the 500 iterations; our tasks "
            "train on their whole training sets.",
        ),
    ),

    "eblora": PaperPreset(
        paper="EBLoRA: Spectral Imbalance Causes Forgetting in Low-Rank Continual Adaptation, arXiv 2602.00722 "
              "(ICML 2026)",
        code="haodotgu/EBLoRA",
        values={
            "optimizer": Cited("adamw", _EBLORA + "llava/train/llava_trainer.py: create_optimizer builds "
                               "RiemannianAdamW (llava/train/riemannian_adam.py)",
                               note="the method's own Riemannian AdamW; the run's optimizer stays adamw"),
            "lr": Cited(2e-4, _UCIT + "train/task1.json ... task5.json: \"lr\": 2e-4"),
            "lr_schedule": Cited("cosine", _EBLORA + "scripts/Train_UCIT/Task1.sh ... Task6.sh: "
                                 "--lr_scheduler_type \"cosine\""),
            "warmup_ratio": Cited(0.03, _EBLORA + "scripts/Train_UCIT/Task1.sh ... Task6.sh: --warmup_ratio 0.03"),
            "weight_decay": Cited(0.1, _EBLORA + "scripts/Train_UCIT/Task1.sh ... Task6.sh: --weight_decay 0.1"),
            "batch_size": Cited(64, _UCIT + "train/task*.json: gpu_num 4 x batch_size 8 x grad_acc 2 = 64",
                                note="the authors' effective batch is already our 64"),
            "max_grad_norm": Cited(1.0, _EBLORA + "scripts/Train_UCIT/Task1.sh ... Task6.sh: no --max_grad_norm, "
                                   "so " + _HF_CLIP,
                                   note="a library default the authors left in force, not a value they wrote"),
            "targets": Cited(("q", "k", "v", "o", "mlp"), _EBLORA + "llava/train/train.py: find_all_linear_names, "
                             "every nn.Linear of the language model but lm_head"),
            "method.rank": Cited(16, _UCIT + "train/task*.json: \"rank\": 16"),
            "method.alpha": Cited(32.0, _EBLORA + "scripts/Train_UCIT/Task1.sh ... Task6.sh: "
                                  "--lora_alpha $((RANK * 2))"),
            "method.energy": Cited(0.99, _UCIT + "train_post/task*.json: \"energy_threshold\": 0.99"),
            "method.init_a": Cited(0.0, _UCIT + "train/task*.json: \"init_alpha\": 0.0"),
            "method.init_b": Cited(0.0, _UCIT + "train/task*.json: \"init_beta\": 0.0"),
            "method.basis_gradient": Cited("task_start", _EBLORA + "scripts/Train_UCIT/train_all.sh: "
                                           "extract_gradients.py runs before a task (fixed_rank: V) and after it "
                                           "(energy: F) on the same data, both loading only model_base"),
            "method.step_scale_dim": Cited(4096, _EBLORA + "llava/train/llava_trainer.py: RiemannianAdamW(..., "
                                           "grad_scaling=float(4096)); llava/train/riemannian_adam.py divides each "
                                           "U / V displacement by sqrt(r / 4096)",
                                           note="4096 is LLaVA-7B's hidden size, a constant in the code for every "
                                                "layer; kept, so on a 64-wide backbone the step of U and V is "
                                                "sqrt(4096 / 16) = 16 times AdamW's, where step_scale_dim 0 (the "
                                                "layer's width, the code's ratio on LLaVA) gives 2"),
        },
        notes=(
            "LoRA dropout 0.05 (llava/train/train.py: lora_dropout default) does not carry over: our EBLoRA branch "
            "has no dropout.",
            "UCIT trains 3 epochs on tasks 1, 3, 4 and 5 and 1 epoch on tasks 2 and 6 (train/task*.json), the last "
            "task at lr 2e-5; " + _EPOCHS + ", and the rate is 2e-4 on every task.",
            "The multimodal projector trains too, at --mm_projector_lr 2e-5; our backbones have no projector.",
            "The gradients for the init and for growing F are taken at the pre-trained weights "
            "(llava/train/extract_gradients.py loads only model_base; the lines loading earlier tasks' LoRA are "
            "commented out) on 20 % of the task's data (scripts/Train_UCIT/train_all.sh: 0.2); ours are taken at "
            "the current merged weights in the common regime; this preset takes both from the gradient at the "
            "task's start (basis_gradient task_start), which is W0 on the first task and the merged weights of "
            "the earlier tasks after it (we keep no second copy of W0 to take gradients at).",
            "The MLLM-DCL benchmark uses rank 32, lr 2e-5 and init a 0.002, b 0.006 "
            "(configs/model_configs/LLaVA/MLLM-DCL/train/task*.json); this preset follows UCIT.",
        ),
    ),

    "olora": PaperPreset(
        paper="O-LoRA (Wang et al.), Findings of EMNLP 2023, arXiv 2310.14152",
        code="cmnfriend/O-LoRA",
        values={
            "optimizer": Cited("adamw", _OLORA + "configs/ds_configs/stage2.config: \"optimizer\": AdamW"),
            "lr": Cited(1e-3, _OLORA + "scripts/order_1.sh: --learning_rate 1e-03 (T5-large, every task)"),
            "lr_schedule": Cited("constant", _OLORA + "scripts/order_1.sh: --lr_scheduler_type constant"),
            "warmup_steps": Cited(0, _OLORA + "scripts/order_1.sh: --warmup_steps 0"),
            "weight_decay": Cited(0.0, _OLORA + "scripts/order_1.sh: no --weight_decay, so transformers' default "
                                  "0.0 (configs/ds_configs/stage2.config: weight_decay auto)"),
            "batch_size": Cited(64, _OLORA + "scripts/order_1.sh: 8 GPUs x --per_device_train_batch_size 8 x "
                                "--gradient_accumulation_steps 1 = 64"),
            "max_grad_norm": Cited(1.0, _OLORA + "configs/ds_configs/stage2.config: \"gradient_clipping\": auto, "
                                   "so " + _HF_CLIP,
                                   note="a library default the authors left in force, not a value they wrote"),
            "targets": Cited(("q", "v"), _OLORA + "src/peft/utils/other.py: TRANSFORMERS_MODELS_TO_LORA_TARGET_"
                             "MODULES_MAPPING[\"t5\"] = [\"q\", \"v\"] (src/run_uie_lora.py's LoraConfig names no "
                             "target modules)"),
            "method.rank": Cited(8, _OLORA + "src/run_uie_lora.py: lora_dim default 8"),
            "method.alpha": Cited(32.0, _OLORA + "src/run_uie_lora.py: LoraConfig(lora_alpha=32)"),
            "method.dropout": Cited(0.1, _OLORA + "src/run_uie_lora.py: LoraConfig(lora_dropout=0.1)"),
            "method.lambda_1": Cited(0.5, _OLORA + "scripts/order_1.sh: --lamda_1 0.5"),
            "method.lambda_2": Cited(0.0, _OLORA + "scripts/order_1.sh: --lamda_2 0"),
            "method.overlap": Cited("l1", _OLORA + "src/uie_trainer_lora.py: orthogonal_loss += "
                                    "torch.abs(torch.mm(param, param_.T)).sum()"),
        },
        notes=(
            "One epoch per task (scripts/order_1.sh: --num_train_epochs 1); " + _EPOCHS + ".",
            "The LLaMA-2 scripts (scripts_llama/order_1.sh) train the first task at 1e-3 and the later ones at "
            "1e-4, with the same effective batch of 64 (1 x 8 accumulation x 8 GPUs).",
        ),
    ),

    "inflora": PaperPreset(
        paper="InfLoRA (Liang & Li), CVPR 2024, arXiv 2404.00228",
        code="liangyanshuo/InfLoRA",
        values={
            "optimizer": Cited("adam", _INFLORA + "configs/cifar100_inflora.json: \"optim\": \"adam\" "
                               "(methods/inflora.py: optim.Adam, betas (0.9, 0.999))"),
            "lr": Cited(5e-4, _INFLORA + "configs/cifar100_inflora.json: \"init_lr\" and \"lrate\": 0.0005"),
            "lr_schedule": Cited("cosine", _INFLORA + "methods/inflora.py: CosineSchedule(optimizer, K=epochs) "
                                 "(utils/schedulers.py: lr cos(99 pi e / (200 (K - 1))) at epoch e)",
                                 note="the code's is a quarter cosine stepped per epoch, from lr down to 1.6 % of "
                                      "it at the last epoch; ours decays to 0 over the task's steps"),
            "weight_decay": Cited(0.0, _INFLORA + "configs/cifar100_inflora.json: \"weight_decay\": 0.0"),
            "batch_size": Cited(128, _INFLORA + "configs/cifar100_inflora.json: \"batch_size\": 128"),
            "max_grad_norm": Cited(0.0, _INFLORA + "methods/inflora.py: train_function steps the optimizer "
                                   "without clipping"),
            "loss_classes": Cited("current", _INFLORA + "methods/inflora.py: train_function scores targets - "
                                  "_known_classes against the current task's classifier only "
                                  "(models/sinet_inflora.py: classifier_pool[numtask - 1])"),
            "targets": Cited(("k", "v"), _INFLORA + "models/vit_inflora.py: Attention_LoRA holds lora_A_k, lora_B_k "
                             "and lora_A_v, lora_B_v only"),
            "method.rank": Cited(10, _INFLORA + "configs/cifar100_inflora.json: \"rank\": 10"),
            "method.lamb": Cited(0.95, _INFLORA + "configs/cifar100_inflora.json: \"lamb\": 0.95"),
            "method.lame": Cited(1.0, _INFLORA + "configs/cifar100_inflora.json: \"lame\": 1.0"),
        },
        notes=(
            "20 epochs per task (configs/cifar100_inflora.json: init_epoch, epochs); " + _EPOCHS + ".",
            "The ImageNet-R configuration uses lamb 0.98 (configs/mimg10_inflora.json) and DomainNet rank 30 "
            "(configs/domainnet_inflora.json); this preset follows CIFAR-100.",
        ),
    ),

    "sdlora": PaperPreset(
        paper="SD-LoRA (Wu et al.), ICLR 2025, arXiv 2501.13198",
        code="WuYichen-97/SD-Lora-CL",
        values={
            "optimizer": Cited("sgd", _SDLORA + "models/sdlora.py: _train builds optim.SGD on every task"),
            "momentum": Cited(0.9, _SDLORA + "models/sdlora.py: optim.SGD(..., momentum=0.9)"),
            "lr": Cited(8e-3, _SDLORA + "exps/sdlora_c100.json: \"init_lr\" and \"lrate\": 8e-3"),
            "lr_schedule": Cited("constant", _SDLORA + "models/sdlora.py: _train's MultiStepLR milestones "
                                 "[60, 120, 170] (first task) and [40, 70] (later tasks) lie past the 20 epochs, so "
                                 "the rate never changes (the json's \"scheduler\": \"cosine\" is read only by "
                                 "get_scheduler, which _train does not call)"),
            "weight_decay": Cited(0.0, _SDLORA + "models/sdlora.py: _train's SGD has no weight decay (the "
                                  "argument is commented out; the json's 2e-4 goes unused)"),
            "batch_size": Cited(128, _SDLORA + "exps/sdlora_c100.json: \"batch_size\": 128"),
            "max_grad_norm": Cited(0.0, _SDLORA + "models/sdlora.py: _update_representation steps the optimizer "
                                   "without clipping"),
            "loss_classes": Cited("current", _SDLORA + "models/sdlora.py: _update_representation: "
                                  "F.cross_entropy(logits[:, self._known_classes:], targets - _known_classes)"),
            "targets": Cited(("q", "v"), _SDLORA + "backbone/lora.py: _LoRA_qkv_timm_train adds the low-rank "
                             "updates to the q and v slices of timm's fused qkv"),
            "method.rank": Cited(10, _SDLORA + "models/sdlora.py: rank=10 (LoRA_ViT_timm(r=rank))"),
            "method.init_magnitude": Cited(0.8, _SDLORA + "backbone/lora.py: scaling_factor = "
                                           "nn.Parameter(torch.Tensor([0.8]))"),
        },
        notes=(
            "20 epochs per task (exps/sdlora_c100.json: init_epoch, epochs); " + _EPOCHS + ".",
            "ImageNet-R trains at lr 1e-2 (exps/sdlora_inr.json); this preset follows CIFAR-100.",
        ),
    ),

    "loraga": PaperPreset(
        paper="LoRA-GA (Wang, Yu, Li), NeurIPS 2024, arXiv 2407.05000",
        code="Outsider565/LoRA-GA",
        values={
            "optimizer": Cited("adamw", _LORAGA + "examples/utils.py: train_text_to_text_model, optim "
                               "\"adamw_torch\""),
            "lr": Cited(1e-4, _LORAGA + "examples/float_t5_sst2.py: learning_rate=1e-4 (T5-base on SST-2)"),
            "lr_schedule": Cited("cosine", _LORAGA + "examples/float_t5_sst2.py: lr_scheduler_type=\"cosine\""),
            "warmup_ratio": Cited(0.03, _LORAGA + "examples/float_t5_sst2.py: warmup_ratio=0.03"),
            "weight_decay": Cited(0.0, _LORAGA + "examples/float_t5_sst2.py: weight_decay=0.0"),
            "max_grad_norm": Cited(1.0, _LORAGA + "examples/float_t5_sst2.py: max_grad_norm=1.0"),
            "batch_size": Cited(32, _LORAGA + "examples/float_t5_sst2.py: per_device_batch_size=32, one process"),
            "targets": Cited(("q", "k", "v", "o", "mlp"), _LORAGA + "examples/utils.py: find_all_linear_modules, "
                             "every nn.Linear but lm_head and embed_tokens"),
            "method.rank": Cited(32, _LORAGA + "examples/float_t5_sst2.py: main(lora_rank=32)",
                                 note="its 2 x 32 gradient singular vectors fill our 64-wide layers exactly"),
            "method.alpha": Cited(8.0, _LORAGA + "examples/float_t5_sst2.py: main(lora_alpha=8)"),
            "method.direction": Cited("ArB2r", _LORAGA + "peft/src/peft/tuners/lora/config.py: LoraGAConfig "
                                      "direction default \"ArB2r\""),
            "method.scale": Cited("stable", _LORAGA + "peft/src/peft/tuners/lora/config.py: LoraGAConfig scale "
                                  "default \"stable\""),
            "method.stable_gamma": Cited(16.0, _LORAGA + "peft/src/peft/tuners/lora/config.py: LoraGAConfig "
                                         "stable_gamma default 16"),
            "method.init_form": Cited("authors", _LORAGA + "peft/src/peft/tuners/lora/layer.py: lora_ga_init keeps "
                                      "the unit singular vectors (A = V[:r], B = U[:, r:2r]) and scales both by "
                                      "d_out^(1/4) / sqrt(gamma), then W -= scaling * B @ A"),
        },
        notes=(
            "The authors' \"stable\" scale (peft/src/peft/tuners/lora/layer.py) multiplies both A0 and B0 by "
            "d_out^(1/4) / sqrt(gamma) and drops the gradient's singular values; ours follows PEFT 0.21.2 (B0 "
            "carries diag(S) and only B0 is rescaled) unless init_form is \"authors\", which this preset sets.",
            "The gradient is estimated on 128 examples (examples/float_t5_sst2.py: sample_size=128, iters 64 x "
            "bsz 2); our default of 4 batches of 32 is the same 128 examples.",
            "One epoch (num_train_epochs=1); " + _EPOCHS + ".",
            "LLaMA-2-7B on MetaMathQA (examples/float_llama2-7b_metamath.py) trains at lr 2e-5 and batch 128 with "
            "the same rank, alpha, schedule and clipping; this preset follows T5-base, the smaller model.",
        ),
    ),

    "pissa": PaperPreset(
        paper="PiSSA (Meng, Wang, Zhang), NeurIPS 2024, arXiv 2404.02948",
        code="GraphPKU/PiSSA",
        values={
            "optimizer": Cited("adamw", _PISSA + "train.py: TrainingArguments optim default \"adamw_torch\""),
            "lr": Cited(2e-5, _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: --learning_rate 2e-5"),
            "lr_schedule": Cited("cosine", _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: "
                                 "--lr_scheduler_type \"cosine\""),
            "warmup_ratio": Cited(0.03, _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: --warmup_ratio 0.03"),
            "weight_decay": Cited(0.0, _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: --weight_decay 0."),
            "max_grad_norm": Cited(1.0, _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: no --max_grad_norm, so "
                                   + _HF_CLIP + " (configs/ds_config_zero2_no_offload.json: gradient_clipping auto)",
                                   note="a library default the authors left in force, not a value they wrote"),
            "targets": Cited(("q", "k", "v", "o", "mlp"), _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: "
                             "utils/init_pissa.py --target_modules q_proj k_proj v_proj o_proj gate_proj up_proj "
                             "down_proj"),
            "method.dropout": Cited(0.0, _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: --lora_dropout 0 "
                                    "(train.py: \"Must be set to 0 when using PiSSA\")"),
            "method.svd_iterations": Cited(16, _PISSA + "scripts/metamath_llama2_7b/run_pissa.sh: --init_weights "
                                           "pissa_niter_16"),
        },
        notes=(
            "Rank 128 with alpha 128 (scripts/metamath_llama2_7b/run_pissa.sh) is wider than our 64-wide layers; "
            "the scale alpha / r = 1 it gives is what our default rank 8, alpha 8 keeps (set alpha equal to any "
            "other rank).",
            "The effective batch of 128 (4 per device x 4 accumulation x 8 GPUs) is a 7B model's; ours stays 64.",
            "One epoch over 100,000 MetaMathQA examples (--sub_task metamath:100000); " + _EPOCHS + ".",
        ),
    ),

    "dora": PaperPreset(
        paper="DoRA (Liu et al.), ICML 2024, arXiv 2402.09353",
        code="NVlabs/DoRA",
        values={
            "optimizer": Cited("adamw", _DORA + "finetune.py: TrainingArguments(optim=\"adamw_torch\")"),
            "lr": Cited(2e-4, _DORA + "llama2_7B_DoRA.sh: --learning_rate 2e-4"),
            "weight_decay": Cited(0.0, _DORA + "finetune.py: weight_decay default 0.0"),
            "max_grad_norm": Cited(1.0, _DORA + "finetune.py: TrainingArguments without max_grad_norm, so "
                                   + _HF_CLIP,
                                   note="a library default the authors left in force, not a value they wrote"),
            "targets": Cited(("q", "k", "v", "mlp"), _DORA + "llama2_7B_DoRA.sh: --target_modules "
                             "[\"q_proj\", \"k_proj\", \"v_proj\", \"up_proj\", \"down_proj\"]",
                             note="up_proj and down_proj are both MLP layers: mlp adapts both of ours"),
            "method.rank": Cited(32, _DORA + "README.md: the example run \"sh llama2_7B_DoRA_r.sh 32 64 "
                                 "./finetuned_result/r32_lr2e-4 0\" (rank 32)"),
            "method.alpha": Cited(64.0, _DORA + "README.md: the same example, alpha 64"),
            "method.dropout": Cited(0.05, _DORA + "finetune.py: lora_dropout default 0.05"),
        },
        notes=(
            "The schedule is transformers' default linear decay after warmup_steps=100 (finetune.py) of about "
            "32,000 steps (3 epochs of commonsense_170k at batch 16); linear decay has no equivalent here, so the "
            "common constant rate is kept, and 100 steps (0.3 % of their run) are under one of our steps, so "
            "there is no warm-up.",
            "The batch of 16 (llama2_7B_DoRA.sh: --batch_size 16) is a 7B model's; ours stays 64.",
            "Three epochs (--num_epochs 3); " + _EPOCHS + ".",
            "The code detaches the row norm from the gradient (finetune.py: dora_simple=True), as ours does.",
        ),
    ),

    "adalora": PaperPreset(
        paper="AdaLoRA (Zhang et al.), ICLR 2023, arXiv 2303.10512",
        code="QingruZhang/AdaLoRA",
        values={
            "optimizer": Cited("adamw", _ADALORA + "NLU/src/transformers/trainer.py: create_optimizer uses AdamW"),
            "lr": Cited(8e-4, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --learning_rate 8e-4 "
                        "(DeBERTaV3-base on SST-2)"),
            "warmup_ratio": Cited(0.02, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --warmup_steps 1000",
                                  note="1,000 of the run's 50,520 steps (24 epochs x 2,105 batches of 32 of SST-2's "
                                       "67,349 sentences)"),
            "weight_decay": Cited(0.01, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --weight_decay 0.01"),
            "max_grad_norm": Cited(1.0, _ADALORA + "NLU/src/transformers/training_args.py: max_grad_norm default "
                                   "1.0 (the script does not change it)",
                                   note="a library default the authors left in force, not a value they wrote"),
            "batch_size": Cited(32, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --per_device_train_batch_size 32 "
                                "(--nproc_per_node=1)"),
            "targets": Cited(("q", "k", "v", "o", "mlp"), _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: "
                             "--lora_module query,key,value,intermediate,layer.output,attention.output"),
            "method.init_r": Cited(2, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --lora_r 2"),
            "method.target_r": Cited(1, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --target_rank 1"),
            "method.alpha": Cited(16.0, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --lora_alpha 16 "
                                  "(loralib/loralib/adalora.py: scaled by alpha / ranknum)"),
            "method.orth_reg_weight": Cited(0.1, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --reg_orth_coef 0.1"),
            "method.beta1": Cited(0.85, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --beta1 0.85"),
            "method.beta2": Cited(0.85, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --beta2 0.85"),
            "method.tinit": Cited(0.12, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --init_warmup 6000",
                                  note="6,000 of the run's 50,520 steps (0.119)"),
            "method.tfinal": Cited(0.44, _ADALORA + "NLU/scripts/run_debertav3_sst2.sh: --final_warmup 22000",
                                   note="22,000 of the run's 50,520 steps (0.435)"),
        },
        notes=(
            "The schedule is transformers' default linear decay (NLU/src/transformers/training_args.py: "
            "lr_scheduler_type default \"linear\"); linear decay has no equivalent here, so the common constant "
            "rate is kept after the warm-up.",
            "The rank pattern is re-masked every 100 steps (--mask_interval 100), 0.2 % of the run and under one "
            "of our steps: delta_t stays 1.",
            "24 epochs (--num_train_epochs 24); " + _EPOCHS + ", and the budget phases are shares of it.",
            "MNLI (NLU/scripts/run_debertav3_mnli.sh) trains at lr 5e-4 with init rank 3; this preset follows "
            "SST-2, a single-sentence classification like ours.",
        ),
    ),

    "wegeft": PaperPreset(
        paper="WeGeFT (Savadikar, Song, Wu), ICML 2025, arXiv 2312.00700 (its earlier versions: GIFT)",
        code="savadikarc/gift",
        values={
            "optimizer": Cited("adamw", _GIFT + "configs/training/vtab/gift.yaml: opt: 'adamw', betas 0.9, 0.999"),
            "lr": Cited(1e-4, _GIFT + "configs/training/vtab/gift.yaml: lr: 1e-4",
                        note="the configuration's default; scripts/visual_classification/vtab/tune_vtab_gift.sh "
                             "searches 1e-4 to 5e-3 per data set"),
            "lr_schedule": Cited("cosine", _GIFT + "configs/training/vtab/gift.yaml: sched: 'cosine'"),
            "warmup_ratio": Cited(0.1, _GIFT + "configs/training/vtab/gift.yaml: warmup_epochs: 10 of epochs: 100"),
            "weight_decay": Cited(0.0, _GIFT + "configs/training/vtab/gift.yaml: weight_decay: 0.0",
                                  note="the default; tune_vtab_gift.sh searches 0.01, 0.001, 0.0001 and 0"),
            "batch_size": Cited(64, _GIFT + "configs/training/vtab/gift.yaml: batch_size: 64"),
            "max_grad_norm": Cited(0.0, _GIFT + "configs/training/vtab/gift.yaml: \"# clip_grad: 5.0\" is "
                                   "commented out"),
            "targets": Cited(("o",), _GIFT + "configs/training/vtab/gift.yaml: gift_target_modules: attn:proj "
                             "(timm ViT's attention output projection)"),
            "method.rank": Cited(16, _GIFT + "configs/training/vtab/gift.yaml: gift_rank: 16"),
            "method.alpha": Cited(16.0, _GIFT + "gift/gift/modeling_gift.py: the generated update "
                                  "out_projections(in_projections(W)) is added unscaled",
                                  note="alpha = rank makes our alpha / r scale 1, as the code's"),
            "method.tie": Cited(True, _GIFT + "gift/gift/modeling_gift.py: one in / out projection pair per target "
                                "module type (in_projections[target_key]), shared by every layer"),
        },
        notes=(
            "The ICML 2025 code (savadikarc/wegeft) could not be read here; the values are from savadikarc/gift, "
            "the same paper's earlier code (ViT-B/16 on VTAB and FGVC; configs/training/CUB/gift.yaml is the "
            "same).",
            "The configuration's drop_path 0.1, warm-up from 1e-7 and floor of 1e-6 (timm's cosine) have no "
            "equivalent on our backbones and schedule.",
            "100 epochs (epochs: 100); " + _EPOCHS + ".",
            "The language-model setup (scripts/language_modeling/run_commonsense.sh and README.md) uses lr 2.5e-4, "
            "rank 64, q_proj and v_proj, warmup_ratio 0.1, a linear schedule and a batch of 32 for 6 epochs; this "
            "preset follows the ViT setup, the one closest to ours.",
        ),
    ),

    "loretta": PaperPreset(
        paper="LoRETTA (Yang, Zhou, Wong, Zhang), NAACL 2024, arXiv 2402.11417",
        code="yifanycc/loretta",
        values={
            "optimizer": Cited("adamw", _LORETTA + "bert_model/run_glue_v5.py: OurArguments(TrainingArguments), "
                               "transformers' AdamW"),
            "lr": Cited(1e-4, _LORETTA + "bert_model/run_all_bert_exp.sh: MODE=loretta_rep ... LR=1e-4 "
                        "(DeBERTa-base and RoBERTa-large on SST-2)"),
            "lr_schedule": Cited("constant", _LORETTA + "bert_model/run_glue_v5.py: OurArguments lr_scheduler_type "
                                 "'constant'"),
            "warmup_steps": Cited(0, _LORETTA + "bert_model/run_glue_v5.py: lr_scheduler_type 'constant'",
                                  note="bert_model/finetune.sh passes --warmup_step=500, which transformers' "
                                       "'constant' schedule ignores"),
            "weight_decay": Cited(0.0, _LORETTA + "bert_model/finetune.sh: no --weight_decay, so transformers' "
                                  "default 0.0"),
            "max_grad_norm": Cited(1.0, _LORETTA + "bert_model/finetune.sh: no --max_grad_norm, so " + _HF_CLIP,
                                   note="a library default the authors left in force, not a value they wrote"),
            "batch_size": Cited(8, _LORETTA + "bert_model/run_all_bert_exp.sh: BS=8"),
            "targets": Cited(("q", "v"), _LORETTA + "loretta/loretta/mapping.py: TRANSFORMERS_MODELS_TO_LORA_"
                             "TARGET_MODULES_MAPPING (roberta: query, value; llama: q_proj, v_proj), used as "
                             "bert_model/run_glue_v5.py passes target_modules None"),
            "method.rank": Cited(8, _LORETTA + "bert_model/run_glue_v5.py: rep_bottleneck 8"),
            "method.alpha": Cited(16.0, _LORETTA + "bert_model/run_glue_v5.py: rep_alpha 16"),
            "method.dropout": Cited(0.05, _LORETTA + "bert_model/run_glue_v5.py: LorettaRepConfig(lora_dropout=0.05)"),
            "method.tensor_rank": Cited(8, _LORETTA + "bert_model/finetune.sh: RANK=${RANK:-8}, passed as "
                                        "--tensor_rank=$RANK"),
            "method.init": Cited("gaussian", _LORETTA + "loretta/loretta/tuners/loretta_rep.py: reset_parameters "
                                 "leaves the zero init of B commented out, so every tensor-train core keeps its "
                                 "random init",
                                 note="the update is not zero at step 0, which costs the tiny ViT much of its "
                                      "pre-trained accuracy before training (our default is zero)"),
        },
        notes=(
            "10 epochs (bert_model/run_all_bert_exp.sh: EPOCH=10); " + _EPOCHS + ".",
            "DeBERTa-base's mapping is its fused in_proj (q, k and v); the preset takes the query / value mapping "
            "that RoBERTa, BERT, OPT and LLaMA share.",
            "LLaMA-2-7B (large_models/run_all_large_exp.sh) trains 3 epochs at lr 1e-4 and batch 8.",
        ),
    ),
}


_TRACE_REGIME = ("TRACE's own training regime is full fine-tuning of LLaMA-2-7B: Adam with betas (0.9, 0.95) at "
                 "lr 1e-5 (training/main.py, training/replay.py: FusedAdam), a constant rate with 0 warm-up "
                 "(get_constant_schedule_with_warmup, although the scripts pass --lr_scheduler_type cosine), "
                 "weight decay 0 and clipping at 1.0 (utils/ds_utils.py: gradient_clipping 1.0); it belongs to "
                 "that baseline, not to the aid, so it is not set here.")

AIDS: dict[str, PaperPreset] = {
    "replay": PaperPreset(
        paper="TRACE (Wang et al.), arXiv 2310.06762",
        code="BeyonderXX/TRACE",
        values={
            "replay": Cited(200, _TRACE + "scripts/train_replay.sh: --past_task_ratio 0.1 (training/replay.py "
                            "keeps that share of each finished task's training set)",
                            note="our buffer has one fixed size shared by the finished tasks: 200 examples are "
                                 "10 % of a 2,000-example task of the skills and hf streams (about 16 % of a "
                                 "digits task), the share TRACE holds after the second task"),
            "replay_rule": Cited("balanced", _TRACE + "training/replay.py: replay concatenates the same share of "
                                 "every finished task"),
        },
        notes=(
            "TRACE replays in a separate pass of one epoch after each task (training/replay.py: replay(i_task, 1)), "
            "over the finished tasks' samples and the general Lima data (--replay_dataset_name Lima); ours mixes "
            "one replayed batch into every step of the next tasks, and has no general replay set.",
            _TRACE_REGIME,
        ),
    ),
    "ewc": PaperPreset(
        paper="TRACE (Wang et al.), arXiv 2310.06762",
        code="BeyonderXX/TRACE",
        values={
            "ewc_lambda": Cited(400.0, _TRACE + "model/Regular/EWC.py: EWC(..., lambda_ewc=400), which "
                                "training/main.py constructs without the argument; the penalty is "
                                "0.5 lambda sum F (p - p_old)^2"),
            "ewc_online": Cited(True, _TRACE + "model/Regular/EWC.py: one Fisher accumulated over every task and "
                                "never reset (_regular_fisher is commented out), anchored at the last task's "
                                "parameters (_update_previous_params)"),
            "ewc_gamma": Cited(1.0, _TRACE + "model/Regular/EWC.py: _update_fisher adds each task's squared "
                               "gradients to the running Fisher without decay"),
        },
        notes=(
            "TRACE's Fisher adds grad^2 / len(dataloader) after every training step of every epoch "
            "(model/Regular/EWC.py: _update_fisher), so each task contributes its epochs (3 to 7) times the mean "
            "squared gradient, of the training loss with the penalty in it; ours averages ewc_batches batches of "
            "the task loss once per task, so TRACE's lambda weighs 3 to 7 times more than the same lambda here.",
            _TRACE_REGIME,
        ),
    ),
}
