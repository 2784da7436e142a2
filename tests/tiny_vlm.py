"""A tiny randomly initialised LLaVA-class vision-language model and processor, built offline from configs."""

from __future__ import annotations

from pathlib import Path

TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}{% else %}"
            "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}"
            "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")


def build_tiny_vlm(out: Path) -> Path:
    """Save a processor (word-level tokenizer with an <image> token, CLIP image processor) and a random model.

    The model never emits end-of-sequence (``eos_token_id`` unset), so greedy decoding always yields words.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    words = ["[PAD]", "[UNK]", "<s>", "</s>", "<image>", *(f"w{i}" for i in range(80)),
             *"abcdefghijklmnopqrstuvwxyz.,:;!?()'0123456789%", "user", "assistant"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    ftok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>",
                                   eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    ftok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    images = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    proc = LlavaProcessor(image_processor=images, tokenizer=ftok, patch_size=8, chat_template=TEMPLATE,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8)
    text = LlamaConfig(vocab_size=len(ftok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, pad_token_id=ftok.pad_token_id,
                       bos_token_id=ftok.bos_token_id, eos_token_id=ftok.eos_token_id)
    cfg = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-1,
                      image_token_index=ftok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = ftok.pad_token_id
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out
