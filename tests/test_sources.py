"""Data sources: every kind of input gives the batches that the arrays give."""

import math

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfhess_linop._sources import DataSource

N = 10
RNG = np.random.default_rng(7)
X = RNG.standard_normal((N, 3))
Y = RNG.standard_normal((N, 2))
SW = RNG.random(N)


class Batches(keras.utils.PyDataset):
    """A PyDataset over in-memory parts, `batch_size` samples a batch."""

    def __init__(self, parts, batch_size, change_at=None):
        super().__init__()
        self.parts, self.batch_size, self.change_at = parts, batch_size, change_at

    def __len__(self):
        return math.ceil(len(tf.nest.flatten(self.parts)[0]) / self.batch_size)

    def __getitem__(self, i):
        cut = slice(i * self.batch_size, (i + 1) * self.batch_size)
        batch = tf.nest.map_structure(lambda a: a[cut], self.parts)
        return self.change_at(i, batch) if self.change_at else batch


def collect(source):
    """Everything one pass yields, concatenated per leaf, as numpy arrays."""
    batches = list(source)
    return tf.nest.map_structure(lambda *b: np.concatenate([t.numpy() for t in b]), *batches)


def assert_same(actual, expected):
    tf.nest.assert_same_structure(actual, expected)
    for a, e in zip(tf.nest.flatten(actual), tf.nest.flatten(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), e)


def batch_lengths(source):
    return [int(tf.shape(tf.nest.flatten(batch)[0])[0]) for batch in source]


def numeric_model(inputs=3):
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(2)])


def from_slices(*parts):
    return tf.data.Dataset.from_tensor_slices(parts)


SOURCES = {
    "arrays": lambda: DataSource(X, Y, SW, batch_size=4),
    "tensors": lambda: DataSource(tf.constant(X), tf.constant(Y), tf.constant(SW), batch_size=4),
    "DataFrame": lambda: DataSource(pd.DataFrame(X), pd.DataFrame(Y), pd.Series(SW), batch_size=4),
    "Dataset unbatched": lambda: DataSource(
        from_slices(X, Y, SW), batch_size=4, model=numeric_model()
    ),
    "Dataset batched": lambda: DataSource(from_slices(X, Y, SW).batch(4)),
    "Dataset rebatched": lambda: DataSource(from_slices(X, Y, SW).batch(3), batch_size=4),
    "Dataset with model": lambda: DataSource(
        from_slices(X, Y, SW).batch(4, drop_remainder=False), model=numeric_model()
    ),
    "PyDataset": lambda: DataSource(Batches((X, Y, SW), 4)),
}


@pytest.mark.parametrize("kind", SOURCES)
def test_every_source_gives_the_arrays_batches(kind):
    source = SOURCES[kind]()
    assert_same(collect(source), (X, Y, SW))
    assert source.n_local == source.n_global == N
    assert batch_lengths(source) == [4, 4, 2]
    assert len(source) == 3
    assert source.has_y and source.has_sample_weight
    assert_same(collect(source), (X, Y, SW))  # a second pass gives the same


@pytest.mark.parametrize("kind", SOURCES)
def test_signature_has_a_none_batch_dimension_and_fits_every_batch(kind):
    source = SOURCES[kind]()
    specs = tf.nest.flatten(source.signature)
    assert [s.shape.as_list() for s in specs] == [[None, 3], [None, 2], [None]]
    assert all(s.dtype == tf.float64 for s in specs)
    for batch in source:
        for spec, tensor in zip(specs, tf.nest.flatten(batch), strict=True):
            assert spec.is_compatible_with(tensor)


@pytest.mark.parametrize("kind", SOURCES)
def test_head_is_the_first_samples_as_one_batch(kind):
    source = SOURCES[kind]()
    assert_same(source.head(6), (X[:6], Y[:6], SW[:6]))
    assert_same(source.head(100), (X, Y, SW))
    assert_same(source.head(0), (X[:0], Y[:0], SW[:0]))


def test_arrays_without_batch_size_are_one_batch():
    source = DataSource(X, Y)
    assert len(source) == 1 and batch_lengths(source) == [N]
    assert source.kind == "arrays" and not source.has_sample_weight


def test_unbatched_dataset_takes_the_keras_default_batch_size():
    x = RNG.standard_normal((70, 3))
    source = DataSource(tf.data.Dataset.from_tensor_slices(x), model=numeric_model())
    assert batch_lengths(source) == [32, 32, 6]
    assert source.signature == (tf.TensorSpec((None, 3), tf.float64),)
    assert_same(collect(source), (x,))


def test_without_model_inputs_a_dataset_is_batched_unless_it_holds_scalars():
    batches = from_slices(X, Y).batch(4, drop_remainder=True)
    assert batch_lengths(DataSource(batches)) == [4, 4]
    assert batch_lengths(DataSource(from_slices(X[:, 0], Y[:, 0]), batch_size=4)) == [4, 4, 2]
    with pytest.raises(ValueError, match=r"different lengths: \[3, 2\].*`model` inputs"):
        DataSource(from_slices(X, Y))


def test_model_inputs_decide_whether_a_dataset_is_batched():
    # Static (4, 3) elements: batches of 4 for a (None, 3) input, samples for a (None, 4, 3) one.
    dataset = tf.data.Dataset.from_tensor_slices(RNG.standard_normal((8, 3))).batch(
        4, drop_remainder=True
    )
    assert batch_lengths(DataSource(dataset, model=numeric_model())) == [4, 4]
    sequences = keras.Sequential([keras.Input((4, 3)), keras.layers.Flatten()])
    source = DataSource(dataset, model=sequences)
    assert batch_lengths(source) == [2]
    assert source.signature[0].shape.as_list() == [None, 4, 3]


@pytest.mark.parametrize(
    "make",
    [
        lambda: DataSource(X, batch_size=4),
        lambda: DataSource(
            tf.data.Dataset.from_tensor_slices(X), batch_size=4, model=numeric_model()
        ),
        lambda: DataSource(from_slices(X).batch(4)),
        lambda: DataSource(Batches(X, 4)),
        lambda: DataSource(Batches((X,), 4)),
    ],
    ids=["arrays", "Dataset x", "Dataset (x,)", "PyDataset x", "PyDataset (x,)"],
)
def test_inputs_only(make):
    source = make()
    assert not source.has_y and len(source.signature) == 1
    assert_same(collect(source), (X,))


@pytest.mark.parametrize(
    "make",
    [
        lambda: DataSource(X, Y, batch_size=3),
        lambda: DataSource(from_slices(X, Y).batch(3)),
        lambda: DataSource(Batches((X, Y), 3)),
    ],
    ids=["arrays", "Dataset", "PyDataset"],
)
def test_inputs_and_targets(make):
    source = make()
    assert source.has_y and not source.has_sample_weight
    assert_same(collect(source), (X, Y))
    assert batch_lengths(source) == [3, 3, 3, 1]


def test_named_inputs_and_outputs_with_per_output_weights():
    x = {"a": X, "b": X[:, :1]}
    a, b = keras.Input((3,), name="a"), keras.Input((1,), name="b")
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(1)(a))
    y = {"out1": Y, "out2": Y[:, 0]}
    sw = {"out1": SW, "out2": 2 * SW}
    expected = (x, y, sw)
    for source in (
        DataSource(x, y, sw, batch_size=4),
        DataSource(tf.data.Dataset.from_tensor_slices(expected), batch_size=4, model=model),
        DataSource(Batches(expected, 4)),
    ):
        assert_same(collect(source), expected)
        assert source.signature[0]["b"].shape.as_list() == [None, 1]


def test_dataframe_columns_feed_inputs_of_the_same_name():
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2]})
    a, b = keras.Input((1,), name="a"), keras.Input((), name="b")
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(1)(a))
    source = DataSource(frame, Y, model=model)
    assert source.kind == "DataFrame"
    assert_same(collect(source), ({"a": X[:, :1], "b": X[:, 1]}, Y))
    unnamed = DataSource(frame, Y, model=numeric_model())
    assert_same(collect(unnamed), (X, Y))


def test_integer_sample_weights_become_floats_and_others_are_not_cast():
    x32 = X.astype(np.float32)
    weights = np.arange(N) % 2
    for source in (
        DataSource(x32, Y, weights),
        DataSource(from_slices(x32, Y, weights).batch(4)),
        DataSource(Batches((x32, Y, weights), 4)),
    ):
        assert [s.dtype for s in source.signature] == [tf.float32, tf.float64, tf.float64]
        assert_same(collect(source), (x32, Y, weights.astype(np.float64)))


def test_lists_of_numbers_are_arrays():
    source = DataSource(X.tolist(), Y.tolist())
    assert_same(collect(source), (X, Y))


def test_strings_are_allowed_for_a_string_input():
    words = np.array(["a", "bb", "c", "dd"])
    text = keras.Input((1,), dtype="string")
    model = keras.Model(text, keras.layers.StringLookup(vocabulary=["a", "bb"])(text))
    source = DataSource(words[:, None], Y[:4], model=model)
    assert source.signature[0].dtype == tf.string
    assert collect(source)[0].ravel().tolist() == [b"a", b"bb", b"c", b"dd"]
    objects = DataSource(words.astype(object)[:, None], Y[:4])
    assert objects.signature[0].dtype == tf.string


@pytest.mark.parametrize(
    "make",
    [
        lambda m: DataSource(np.array([["a"], ["b"]]), Y[:2], model=m),
        lambda m: DataSource(from_slices(np.array([["a"], ["b"]]), Y[:2]).batch(2), model=m),
        lambda m: DataSource(Batches((np.array([["a"], ["b"]]), Y[:2]), 2), model=m),
    ],
    ids=["arrays", "Dataset", "PyDataset"],
)
def test_strings_for_a_numeric_input_are_refused(make):
    with pytest.raises(TypeError, match=r"`x` holds strings.*expects float32"):
        make(numeric_model(1))


def test_a_generator_is_refused_with_what_to_use_instead():
    with pytest.raises(TypeError, match=r"`x` is a generator.*read only once.*from_generator"):
        DataSource(X[i : i + 2] for i in range(0, N, 2))
    with pytest.raises(TypeError, match="PyDataset"):
        DataSource(iter([X]))


def test_an_infinite_dataset_is_refused():
    with pytest.raises(ValueError, match=r"`x` is an infinite tf.data.Dataset"):
        DataSource(from_slices(X, Y).repeat())


def test_an_infinite_pydataset_is_refused():
    class Endless(Batches):
        @property
        def num_batches(self):
            return None

    with pytest.raises(ValueError, match="`x` is an infinite PyDataset"):
        DataSource(Endless((X, Y), 4))


@pytest.mark.parametrize(
    "make",
    [
        lambda: DataSource(X[:0], Y[:0]),
        lambda: DataSource(from_slices(X, Y).take(0)),
        lambda: DataSource(from_slices(X, Y).filter(lambda x, y: False)),
        lambda: DataSource(Batches((X[:0], Y[:0]), 4)),
    ],
    ids=["arrays", "Dataset", "filtered Dataset", "PyDataset"],
)
def test_no_samples_is_refused(make):
    with pytest.raises(ValueError, match="no samples"):
        make()


@pytest.mark.parametrize("name", ["y", "sample_weight"])
@pytest.mark.parametrize("dataset", [from_slices(X, Y).batch(4), Batches((X, Y), 4)])
def test_separate_targets_or_weights_with_a_dataset_are_refused(name, dataset):
    with pytest.raises(ValueError, match=rf"`{name}` cannot be given with a"):
        DataSource(dataset, **{name: Y})


def test_a_pydataset_that_changes_structure_is_refused_naming_the_batch():
    def drop_targets(i, batch):
        return batch[:1] if i == 2 else batch

    def to_float32(i, batch):
        return (batch[0].astype(np.float32), batch[1]) if i == 1 else batch

    with pytest.raises(ValueError, match=r"batch 2 of the PyDataset `x`"):
        DataSource(Batches((X, Y), 4, change_at=drop_targets))
    with pytest.raises(ValueError, match=r"batch 1 of the PyDataset `x` holds.*float32"):
        DataSource(Batches((X, Y), 4, change_at=to_float32))


def test_a_pydataset_whose_sequence_length_varies_gets_a_none_dimension():
    def longer(i, batch):
        return (np.repeat(batch[0][:, :, None], 2 + i, axis=2), batch[1])

    source = DataSource(Batches((X, Y), 4, change_at=longer))
    assert source.signature[0].shape.as_list() == [None, 3, None]


@pytest.mark.parametrize("part", [0, 1, 2])
def test_non_finite_arrays_are_refused_naming_the_argument(part):
    parts = [X.copy(), Y.copy(), SW.copy()]
    parts[part][7, ...] = np.inf if part == 1 else np.nan
    name = ("x", "y", "sample_weight")[part]
    with pytest.raises(ValueError, match=rf"`{name}` has non-finite values.*sample 7"):
        DataSource(*parts)
    with pytest.raises(ValueError, match=rf"batch 1 of the dataset `x`.*`{name}`"):
        DataSource(from_slices(*parts).batch(4))
    with pytest.raises(ValueError, match=rf"batch 1 of the PyDataset `x`.*`{name}`"):
        DataSource(Batches(tuple(parts), 4))


def test_non_finite_named_input_is_named():
    x = {"a": X, "b": X.copy()}
    x["b"][3, 1] = np.nan
    with pytest.raises(ValueError, match=r"`x\['b'\]` has non-finite values.*sample 3"):
        DataSource(x, Y)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"y": Y[:9]}, ValueError, "same number of samples; got 10 and 9"),
        ({"y": Y, "sample_weight": SW[:9]}, ValueError, "`x` and `sample_weight` must have"),
        ({"sample_weight": SW}, ValueError, "`sample_weight` needs `y`"),
        ({"y": Y, "batch_size": 0}, ValueError, "`batch_size` must be a positive integer"),
        ({"y": Y, "batch_size": 2.5}, TypeError, "`batch_size` must be a positive integer"),
        ({"y": np.array([None] * N)}, TypeError, "numeric or strings; `y` has dtype object"),
        ({"y": {"a": Y}, "sample_weight": {"b": SW}}, ValueError, "`sample_weight` must be one"),
        ({"y": Y, "comm": "world"}, TypeError, "`comm` must be an mpi4py communicator"),
    ],
)
def test_bad_arrays_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        DataSource(X, **kwargs)


def test_dataset_elements_of_four_parts_are_refused():
    with pytest.raises(ValueError, match=r"\(x, y, sample_weight\)`; got a tuple of 4"):
        DataSource(from_slices(X, Y, SW, SW))


def test_a_dataset_that_reshuffles_on_every_pass_is_refused():
    with pytest.raises(ValueError, match=r"different batches on each pass.*reshuffle_each"):
        DataSource(from_slices(X, Y).shuffle(N, seed=0).batch(4))
    fixed = DataSource(
        from_slices(X, Y).shuffle(N, seed=0, reshuffle_each_iteration=False).batch(4)
    )
    shuffled = collect(fixed)
    assert_same(collect(fixed), shuffled)
    order = np.argsort(shuffled[0][:, 0])
    assert_same(tuple(a[order] for a in shuffled), tuple(a[np.argsort(X[:, 0])] for a in (X, Y)))


def test_a_pydataset_with_random_augmentation_is_refused():
    noise = np.random.default_rng(0)

    def augment(i, batch):
        return (batch[0] + noise.standard_normal(batch[0].shape), batch[1])

    with pytest.raises(ValueError, match="different batches on each pass"):
        DataSource(Batches((X, Y), 4, change_at=augment))


def test_a_named_input_dataset_is_batched_by_the_model_inputs():
    a, b = keras.Input((3,), name="a"), keras.Input((1,), name="b")
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(1)(a))
    x = {"a": X, "b": X[:, :1]}
    source = DataSource(tf.data.Dataset.from_tensor_slices((x, Y)), model=model)
    assert batch_lengths(source) == [N]
    assert_same(collect(source), (x, Y))
    assert_same(collect(DataSource([X, X[:, :1]], Y)), ([X, X[:, :1]], Y))


def test_kind_and_repr():
    assert DataSource(pd.DataFrame(X), Y).kind == "DataFrame"
    assert DataSource(Batches((X, Y), 4)).kind == "PyDataset"
    source = DataSource(from_slices(X, Y).batch(4))
    assert source.kind == "tf.data.Dataset"
    assert repr(source) == "DataSource(kind='tf.data.Dataset', samples=10 of 10, batches=3)"


def test_missing_x_is_refused():
    with pytest.raises(ValueError, match="`x` must be given"):
        DataSource(None, Y)
