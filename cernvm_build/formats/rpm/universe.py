"""rpm-md metadata in the libsolv universe: primary (and filelists when loaded) as one solv.Repo,
cached as a .solv file keyed by the verified index digests."""

from __future__ import annotations

import solv

from cernvm_build.errors import MetadataError
from cernvm_build.lock.resolve.repository import LoadedRepo
from cernvm_build.lock.resolve.universe import (
    SOLV_CACHE_FORMAT,
    RepoPart,
    Universe,
    first_id,
    libsolv_version,
    read_solv,
    write_solv,
)
from cernvm_build.util.content_store import ContentStore


def add_to_universe(u: Universe, loaded: LoadedRepo, store: ContentStore) -> list[RepoPart]:
    shas = "-".join(i.sha256[:16] for i in loaded.record.indexes)
    key = f"rpmmd-{shas}-{len(loaded.filelists)}-{libsolv_version()}-{SOLV_CACHE_FORMAT}"
    solv_file = store.derived("solv", key, ".solv")
    repo = u.pool.add_repo(loaded.record.name)
    # the .solv is used only under its seal: one anyone else wrote is rebuilt from the verified indexes
    if store.trusted(solv_file) and read_solv(repo, solv_file):
        return [RepoPart(loaded, repo, first_id(repo))]
    repo.empty()
    for path in loaded.indexes:
        f = solv.xfopen(str(path))
        if f is None or not repo.add_rpmmd(f, None, 0):
            raise MetadataError(f"{path}: libsolv cannot parse this rpm-md primary file")
        f.close()
    for path in loaded.filelists:
        f = solv.xfopen(str(path))
        if f is None or not repo.add_rpmmd(f, None, solv.Repo.REPO_EXTEND_SOLVABLES):
            raise MetadataError(f"{path}: libsolv cannot parse this rpm-md filelists file")
        f.close()
    write_solv(repo, solv_file)
    store.remember(solv_file)
    return [RepoPart(loaded, repo, first_id(repo))]
