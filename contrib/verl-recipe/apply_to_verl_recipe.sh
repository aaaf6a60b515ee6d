#!/usr/bin/env bash
# Apply this folder's patch series to a verl-recipe checkout, one commit per patch. The deletions were
# written with `git format-patch -D` (no preimage: no verl-recipe content is stored here), which `git am`
# cannot apply, so each deleted path is excluded from `git am` and removed with `git rm` into the same commit.
#   bash apply_to_verl_recipe.sh /path/to/verl-recipe
set -euo pipefail
recipe=${1:?usage: apply_to_verl_recipe.sh /path/to/verl-recipe}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for patch in "${here}"/0*.patch; do
    mapfile -t deleted < <(awk '/^diff --git a\//{path=substr($3, 3)} /^deleted file mode/{print path}' "${patch}")
    excludes=()
    for path in "${deleted[@]}"; do excludes+=("--exclude=${path}"); done
    if ((${#deleted[@]})) && ! grep -q '^@@ ' "${patch}"; then  # deletions only: commit them with the patch's message
        git -C "${recipe}" rm -q -- "${deleted[@]}"
        msg=$(mktemp) && info=$(git mailinfo -b "${msg}" /dev/null <"${patch}")
        author=$(sed -n 's/^Author: //p' <<<"${info}") email=$(sed -n 's/^Email: //p' <<<"${info}")
        { sed -n 's/^Subject: //p' <<<"${info}"; echo; cat "${msg}"; } >"${msg}.full"
        git -C "${recipe}" commit -q --author="${author} <${email}>" -F "${msg}.full"
        rm -f "${msg}" "${msg}.full"
    else
        git -C "${recipe}" am -q --keep-non-patch "${excludes[@]}" "${patch}"
        if ((${#deleted[@]})); then
            git -C "${recipe}" rm -q -- "${deleted[@]}" && git -C "${recipe}" commit -q --amend --no-edit
        fi
    fi
done
git -C "${recipe}" log --oneline -"$(ls "${here}"/0*.patch | wc -l)"
