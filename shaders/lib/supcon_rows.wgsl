// What the kernels that compare pairs of rows look up about a row: its key and whether a pair is
// positive. Reads the bindings `params` and `positives`.

// What decides positives: the label (POS_LABELS), the sample index (the other modes). Key k
// (row N + k) is sample bsz + k: its label follows the batch's, and without labels it is no
// row's positive.
fn row_key(r: u32) -> u32 {
    var sample = r % params.bsz;
    if (r >= params.n_rows) {
        sample = params.bsz + (r - params.n_rows);
    }
    if (params.pos_mode == POS_LABELS) {
        return positives[sample];
    }
    return sample;
}

fn is_positive(key_i: u32, key_j: u32) -> bool {
    if (params.pos_mode == POS_MASK) {
        let word = positives[key_i * params.mask_words + key_j / 32u];
        return ((word >> (key_j % 32u)) & 1u) == 1u;
    }
    if (params.pos_mode == POS_LABELS64) {
        // 64-bit labels, compared at full width: both words of the two samples.
        let li = vec2<u32>(positives[2u * key_i], positives[2u * key_i + 1u]);
        let lj = vec2<u32>(positives[2u * key_j], positives[2u * key_j + 1u]);
        return all(li == lj);
    }
    return key_i == key_j;
}
