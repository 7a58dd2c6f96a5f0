// The epsilon of torch's F.normalize: a row x becomes x / max(||x||, NORM_EPS).

const NORM_EPS: f32 = 1e-12;
