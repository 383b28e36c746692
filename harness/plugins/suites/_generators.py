"""Facts about generators shared by the suites: family and release date.

Release dates are those of AI-GenBench's generator list (Pellegrini et al., "AI-GenBench: A New
Ongoing Benchmark for AI-Generated Image Detection", 2025; file
``training_and_evaluation/ai_gen_bench_metadata/benchmark_generators.py`` of
github.com/srish01/AI-GenBench), which dates each generator by its first public release or
paper. A generator that list does not date, or whose version a suite does not state
(GenImage's and AIGCDetect's "Midjourney", Wukong, DALL-E 2, SD 2.0, Firefly), has no date
here rather than a guessed one. Family: ``gan``, ``diffusion``, ``closed`` (a commercial
service that does not publish its architecture) or ``other``.
"""

from __future__ import annotations

#: canonical name -> (family, release date)
KNOWN = {
    "CycleGAN": ("gan", "2017-03-30"),
    "CRN": ("other", "2017-07-28"),  # Cascaded Refinement Networks
    "ProGAN": ("gan", "2017-10-27"),
    "StarGAN": ("gan", "2017-11-24"),
    "BigGAN": ("gan", "2018-09-28"),
    "IMLE": ("other", "2018-11-29"),
    "StyleGAN": ("gan", "2018-12-12"),
    "GauGAN": ("gan", "2019-03-18"),
    "StyleGAN2": ("gan", "2019-12-03"),
    "ADM": ("diffusion", "2021-05-11"),
    "StyleGAN3": ("gan", "2021-06-23"),
    "VQ-Diffusion": ("diffusion", "2021-11-29"),
    "GLIDE": ("diffusion", "2021-12-20"),
    "Latent Diffusion": ("diffusion", "2021-12-21"),
    "Stable Diffusion 1.4": ("diffusion", "2022-08-22"),
    "Stable Diffusion 1.5": ("diffusion", "2022-10-20"),
    "Stable Diffusion 2.1": ("diffusion", "2022-12-07"),
    "Stable Diffusion XL 1.0": ("diffusion", "2023-07-26"),
    "DALL-E 3": ("closed", "2023-09-20"),
    "FLUX.1 dev": ("diffusion", "2024-08-01"),
}
#: Family alone, where the date is not known here.
FAMILY_ONLY = {"Midjourney": "closed", "Firefly": "closed", "DALL-E 2": "closed", "Wukong": "diffusion",
               "Stable Diffusion 2": "diffusion"}


def facts(names: dict[str, str]) -> dict[str, dict[str, str]]:
    """``{suite's generator name: {"family", "released"}}`` for ``names`` (suite name -> canonical)."""
    out = {}
    for name, canonical in names.items():
        if canonical in KNOWN:
            family, released = KNOWN[canonical]
            out[name] = {"family": family, "released": released}
        elif canonical in FAMILY_ONLY:
            out[name] = {"family": FAMILY_ONLY[canonical]}
        else:
            raise KeyError(f"no facts for generator {canonical!r}")
    return out
