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
SEED_FOLDER = "seed-{seed}"

CLUSTERS = "clusters.parquet"
EMBEDDINGS = "embeddings.npy"
EMBEDDINGS_PARTIAL = "embeddings.npy.partial"  # the memmap being filled, chunk by chunk
EMBEDDINGS_PROGRESS = "embeddings.npy.progress.json"

SUBSETS = "subsets"
REPORT_SUFFIX = ".report.json"  # beside each subset: its selection report
CARD = "README.md"  # the Hugging Face dataset card beside the subsets
REPORT = "report.html"

ANSWERS = "answers_{side}.jsonl"
REVIEWS = "reviews.jsonl"
WINRATE_JSON = "winrate.json"
WINRATE_PNG = "winrate.png"
