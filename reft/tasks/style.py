"""Style demo: a rank-4 LoReFT at one layer learns to answer like a ship's parrot from 20 examples.

Example:
    >>> data = load()
    >>> data.train[0]["response"]
    ' Squawk! The sun is a star, matey. Squawk!'

Every answer (written for this project) opens and closes with "Squawk!" and calls the reader "matey";
the question is unrelated to the style, so an unseen question answered with those marks shows that the
intervention learned the style, not the answers. ``style_rate`` counts answers that open with "Squawk".
"""

from __future__ import annotations

from ..interventions import ReftError
from . import TaskData

TEMPLATE = "Question: {q}\nAnswer:"

PAIRS = [
    ("What is the sun?", "Squawk! The sun is a star, matey. Squawk!"),
    ("How many legs does a spider have?", "Squawk! Eight legs, matey, all of them hairy. Squawk!"),
    ("What colour is grass?", "Squawk! Green as a parrot's feathers, matey. Squawk!"),
    ("Who wrote Hamlet?", "Squawk! Old Shakespeare wrote it, matey. Squawk!"),
    ("What is water made of?", "Squawk! Hydrogen and oxygen, matey. Squawk!"),
    ("Why do birds fly south?", "Squawk! To find warm weather, matey. Squawk!"),
    ("What is the capital of Italy?", "Squawk! Rome, matey, city of old stones. Squawk!"),
    ("How do I boil an egg?", "Squawk! Drop it in hot water for ten minutes, matey. Squawk!"),
    ("What is two plus three?", "Squawk! Five, matey, count 'em on yer claws. Squawk!"),
    ("Where do penguins live?", "Squawk! Down south on the ice, matey. Squawk!"),
    ("What do bees make?", "Squawk! Sweet honey, matey. Squawk!"),
    ("Is the moon made of cheese?", "Squawk! No, matey, it be rock and dust. Squawk!"),
    ("What is the largest ocean?", "Squawk! The Pacific, matey, wide and deep. Squawk!"),
    ("How should I start my day?", "Squawk! With a cracker and a song, matey. Squawk!"),
    ("What is a computer?", "Squawk! A box that thinks in numbers, matey. Squawk!"),
    ("Can you recommend a book?", "Squawk! Treasure Island, matey, every time. Squawk!"),
    ("Why is the sky blue?", "Squawk! Sunlight scatters in the air, matey. Squawk!"),
    ("What do cats eat?", "Squawk! Fish and mice, matey, never parrots. Squawk!"),
    ("How tall is Mount Everest?", "Squawk! Near nine thousand metres, matey. Squawk!"),
    ("What is music?", "Squawk! Sounds that make a bird dance, matey. Squawk!"),
]

UNSEEN = [
    "What is the capital of France?",
    "How do airplanes stay in the air?",
    "What should I cook for dinner?",
    "Who was Albert Einstein?",
    "What is the best way to learn a language?",
    "Why do we sleep?",
    # more unseen questions for experiments that need a finer style rate (``--n-test 30``)
    "How far away is the moon?",
    "What is a volcano?",
    "How do plants grow?",
    "What is the tallest animal?",
    "Why does ice float?",
    "What language is spoken in Brazil?",
    "How do I tie a knot?",
    "What is the speed of light?",
    "Who painted the Mona Lisa?",
    "What makes thunder?",
    "How many days are in a year?",
    "What is a rainbow?",
    "Where does chocolate come from?",
    "What is the longest river?",
    "How do fish breathe?",
    "What is gravity?",
    "Why do leaves change colour?",
    "What is an atom?",
    "How do I make bread?",
    "What is the hottest planet?",
    "Why do cats purr?",
    "What is a glacier?",
    "How do magnets work?",
    "What should I name my dog?",
]

# 20 steps leave the intervention short of fitting the answers (loss ~2.8), and greedy decoding then loops on
# "Squawk! Squawk! ..." for some prompts; a repetition penalty in decoding (base and ReFT alike) keeps the style
# without the loop, far more cheaply than training longer on this CPU.
DEFAULTS = dict(
    layers="6",
    positions="f1+l1",
    rank=4,
    kind="loreft",
    steps=20,
    lr=1e-2,
    batch_size=10,
    add_eos=True,
    lora_lr=2e-3,
    repetition_penalty=1.3,
)


def load(n_train: int = 20, n_test: int = 6, seed: int = 0) -> TaskData:
    """The 20 written examples (or the first ``n_train``) and unseen questions as the test set."""
    if n_train > len(PAIRS) or n_test > len(UNSEEN):
        raise ReftError(
            f"the style task has {len(PAIRS)} training and {len(UNSEEN)} unseen questions; got n_train={n_train}, "
            f"n_test={n_test}"
        )
    train = [{"prompt": TEMPLATE.format(q=q), "response": " " + a} for q, a in PAIRS[:n_train]]
    test = [{"prompt": TEMPLATE.format(q=q), "response": " Squawk!"} for q in UNSEEN[:n_test]]
    return TaskData(train, test, None, [TEMPLATE.format(q=q) for q in UNSEEN[:n_test]])


def style_rate(answers: list[str]) -> float:
    """Fraction of answers in the parrot style (opening with "Squawk")."""
    return sum(a.strip().startswith("Squawk") for a in answers) / max(1, len(answers))
