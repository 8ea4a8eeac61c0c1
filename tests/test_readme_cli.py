"""The README's command-line walk-through, every line run in order (shrunk: random-init backbone, 1200 images,
a small SAE), in a fresh folder and cache."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"
SHRINK = {"embed": ["--weights", "random", "--limit", "1200", "--num-workers", "0", "--no-progress"],
          "train": ["--n-latents", "128", "--batch-size", "128", "--val-every", "5", "--min-delta", "0.02",
                    "--no-progress"],
          "evaluate": [], "explore": ["--latents", "2"]}


def walkthrough() -> list[list[str]]:
    section = README.read_text().split("## Command line", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def test_readme_walkthrough_runs(tmp_path):
    lines = walkthrough()
    assert [line[3] for line in lines] == ["embed", "embed", "train", "evaluate", "explore"]
    env = {"SAE_TUTORIAL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(README.parent)}
    for line in lines:
        assert line[:3] == ["python", "-m", "sae_tutorial"]
        proc = subprocess.run([sys.executable, *line[1:], *SHRINK[line[3]]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (line, proc.stderr[-2000:])
        print(proc.stdout)
    assert (tmp_path / "my-sae" / "method_card.json").is_file() and (tmp_path / "my-sae-test" / "report.json").is_file()
    assert (tmp_path / "my-sae-test" / "latent_cards.png").is_file()
