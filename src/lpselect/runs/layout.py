"""Every file and folder name lpselect writes, defined once. Pure constants: importing this pulls in nothing,
so a module that only needs a name (converting the reference's pickles, reading a run folder) stays light.

A run folder::

    RUN/manifest.json            MANIFEST: inputs (sha256), settings, versions, timings, counts of each step
    RUN/.lpselect.lock(.json)    LOCK, LOCK_OWNER: held by the job writing the folder
    RUN/scores.parquet           SCORES: id, ppl_0..ppl_n, prob_i, ... (score)
    RUN/score/                   SCORE_WORK: token tables, passes/, checkpoint/, events.log (score, resumable)
    RUN/clusters.parquet         CLUSTERS; RUN/embeddings.npy EMBEDDINGS (cluster)
    RUN/subsets/<name><suffix>   SUBSETS: each subset, its <subset>.report.json (REPORT_SUFFIX) and README.md
    RUN/report.html              REPORT (report)
    RUN/seed-<s>/                SEED_FOLDER: one run folder per seed (score --seeds)

A training folder (``train``) holds the model, manifest.json and, while training, CHECKPOINT/; an evaluation
folder (``eval``) holds ANSWERS (per side), REVIEWS and WINRATE_JSON / WINRATE_PNG.
"""

MANIFEST = "manifest.json"
LOCK = ".lpselect.lock"  # flock'ed by the job writing the folder; the kernel drops it when that process dies
LOCK_OWNER = ".lpselect.lock.json"  # who holds the lock (pid, host, command), for the refusal message
LOCK_FILES = (LOCK, LOCK_OWNER)

SCORES = "scores.parquet"
SCORE_WORK = "score"  # sub-folder of the run folder with the score job's intermediate state
CHECKPOINT = "checkpoint"  # inside SCORE_WORK (score) or the model folder (train)
CHECKPOINT_STATE = "state.json"  # written last into a checkpoint: marks it complete
CHECKPOINT_MODEL = "model"  # the weights (or LoRA adapter), save_pretrained's folder
CHECKPOINT_OPTIMIZER = "optimizer.pt"
CHECKPOINT_SCHEDULER = "scheduler.pt"
CHECKPOINT_RNG = "rng.pt"
CHECKPOINT_ARRAY = "{name}.npy"  # a per-row array of the epoch in progress (e.g. online_nll)
TOKENS = "tokens"  # inside SCORE_WORK: the token table of the samples
TOKENS_RESPONSE = "tokens_response"  # ... and of the responses alone (IFD)
TOKENS_DONE = "offsets.npy"  # written last into a token table: marks it complete
PASSES = "passes"  # inside SCORE_WORK: one PASS_FILE per kind and epoch
PASS_FILE = "{kind}_{epoch}.npy"  # kind: ppl, prob, ppl_resp, ppl_online
PASS_CHUNKS = "{kind}_{epoch}.chunks"  # a pass in progress: one PASS_CHUNK per rank and chunk of rows
PASS_CHUNK = "rank{rank}-of-{world}-chunk{chunk}.npy"
EVENTS = "events.log"  # inside SCORE_WORK: one line per finished unit of work
MODEL_MARKERS = ("config.json", "adapter_config.json")  # a finished training folder holds one of them
SEED_FOLDER = "seed-{seed}"

CLUSTERS = "clusters.parquet"
EMBEDDINGS = "embeddings.npy"
PARTIAL_SUFFIX = ".partial"  # beside a file written chunk by chunk: the memmap being filled
PROGRESS_SUFFIX = ".progress.json"  # ... and the chunks done so far (replaced atomically after each)
EMBEDDINGS_PARTIAL = EMBEDDINGS + PARTIAL_SUFFIX
EMBEDDINGS_PROGRESS = EMBEDDINGS + PROGRESS_SUFFIX

SUBSETS = "subsets"
REPORT_SUFFIX = ".report.json"  # beside each subset: its selection report
CARD = "README.md"  # the Hugging Face dataset card beside the subsets
CARD_BESIDE = "{stem}.card.md"  # the card beside one subset, where another tool wrote README.md
REPORT = "report.html"

ANSWERS = "answers_{side}.jsonl"
REVIEWS = "reviews.jsonl"
WINRATE_JSON = "winrate.json"
WINRATE_PNG = "winrate.png"
ANSWERS_SETTINGS = "{answers}.settings.json"  # beside an answers file: the model and settings that answered
REPLY_CACHE = "{stem}.cache"  # beside a reviews file: the judge's replies, so a rerun asks only what is missing
