"""The functions a segment query may call, and the ones it may not: data, no logic.

A segment author writes queries, not code, but a HiveQL function call can be code: ``reflect``
runs any static Java method inside HiveServer2 (``reflect('java.lang.System', 'exit', 0)``
stopped the server), ``in_file`` reads the server's files. So ``query_check`` accepts only the
functions listed here (an allowlist: a function this list does not know is refused too).

Where the list came from:

- ``SHOW SYSTEM FUNCTIONS`` on the Spark Thrift Server of pyspark 4.3 (the local HiveServer2,
  591 names), grouped by the family Spark itself gives each function (``ExpressionInfo.getGroup``);
- Apache Hive's built-ins (production runs Apache Hive), from the LanguageManual UDF page
  (https://cwiki.apache.org/confluence/display/Hive/LanguageManual+UDF): the names Spark lacks
  are added to their family and marked "Hive".

Left out on purpose:

- operators, which are syntax rather than calls (``+``, ``=``, ``and``, ``or``, ``not``, ``in``,
  ``between``, ``when``, ``div``; ``case`` stays, since the parser reports ``CASE`` as a call);
- Hive internals the planner inserts itself (``compute_stats``, ``bloom_filter``,
  ``sq_count_check``, ``enforce_constraint``, ``surrogate_key``, ...) and Hive's DataSketches
  ``ds_*`` family (an administrator can allow those with the setting ``allowed_functions``);
- everything in ``REFUSED_FUNCTIONS``: functions that reach the JVM, the file system or the
  network, or run SQL this check never sees. Each one has the reason the error message gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

_RUNS_JAVA = "runs an arbitrary Java method inside HiveServer2"
_PARSES_XML = "parses XML inside HiveServer2, where external entities can read files and URLs"
_HIDDEN_SQL = "compiles the SQL text it is given, which this check never sees"
_FILE_INFO = "reports which files HiveServer2 reads, i.e. the warehouse's paths"

# Built-ins that are refused, with the reason an author reads in the error.
REFUSED_FUNCTIONS: Mapping[str, str] = MappingProxyType(
    {
        # The JVM: any static method (System.exit, Runtime.exec, ...) runs with the server's rights.
        "reflect": _RUNS_JAVA,
        "java_method": _RUNS_JAVA,
        "try_reflect": _RUNS_JAVA,
        "reflect2": "calls an arbitrary Java method on its argument inside HiveServer2 (Hive)",
        # The file system.
        "in_file": "reads a file on HiveServer2's file system (Hive)",
        "from_protobuf": "reads a Protobuf descriptor file from HiveServer2's file system",
        "to_protobuf": "reads a Protobuf descriptor file from HiveServer2's file system",
        "from_avro": "reads an Avro schema from a file or URL named in its options (avroSchemaUrl)",
        "schema_of_avro": "reads an Avro schema from a file or URL named in its options (avroSchemaUrl)",
        "input_file_name": _FILE_INFO,
        "input_file_block_start": _FILE_INFO,
        "input_file_block_length": _FILE_INFO,
        "python_worker_logs": "reads HiveServer2's Python worker logs",
        # XML parsers: external entities (XXE) read local files and fetch URLs. Spark 4.3 did not
        # expand a file entity when tried here; whether one does depends on the server's parser
        # settings and version, so they are refused anyway.
        "xpath": _PARSES_XML,
        "xpath_string": _PARSES_XML,
        "xpath_boolean": _PARSES_XML,
        "xpath_int": _PARSES_XML,
        "xpath_long": _PARSES_XML,
        "xpath_short": _PARSES_XML,
        "xpath_float": _PARSES_XML,
        "xpath_double": _PARSES_XML,
        "xpath_number": _PARSES_XML,
        "from_xml": _PARSES_XML,
        "schema_of_xml": _PARSES_XML,
        # Hive table functions that take a query as a string.
        "get_splits": _HIDDEN_SQL + " (Hive)",
        "get_llap_splits": _HIDDEN_SQL + " (Hive)",
        "get_sql_schema": _HIDDEN_SQL + " (Hive)",
    }
)

# Known-safe built-ins by family: whitespace-separated lower-case names; "# Hive" marks
# Apache Hive built-ins that Spark does not have.
_FAMILIES: Mapping[str, str] = MappingProxyType(
    {
        "aggregate": """
            any any_value approx_count_distinct approx_percentile array_agg avg bit_and bit_or bit_xor
            bool_and bool_or collect_list collect_set collect_union corr count count_if covar_pop
            covar_samp every first first_value grouping grouping_id histogram_numeric kurtosis last
            last_value listagg max max_by mean measure median min min_by mode percentile percentile_approx
            percentile_cont percentile_disc regr_avgx regr_avgy regr_count regr_intercept regr_r2
            regr_slope regr_sxx regr_sxy regr_syy skewness some std stddev stddev_pop stddev_samp
            string_agg sum try_avg try_sum var_pop var_samp variance
            context_ngrams ngrams  # Hive
        """,
        "sketch": """
            approx_top_k approx_top_k_accumulate approx_top_k_combine approx_top_k_estimate
            bitmap_and_agg bitmap_bit_position bitmap_bucket_number bitmap_construct_agg bitmap_count
            bitmap_or_agg count_min_sketch hll_sketch_agg hll_sketch_estimate hll_union hll_union_agg
            kll_merge_agg_bigint kll_merge_agg_double kll_merge_agg_float kll_sketch_agg_bigint
            kll_sketch_agg_double kll_sketch_agg_float kll_sketch_get_n_bigint kll_sketch_get_n_double
            kll_sketch_get_n_float kll_sketch_get_quantile_bigint kll_sketch_get_quantile_double
            kll_sketch_get_quantile_float kll_sketch_get_rank_bigint kll_sketch_get_rank_double
            kll_sketch_get_rank_float kll_sketch_merge_bigint kll_sketch_merge_double
            kll_sketch_merge_float kll_sketch_to_string_bigint kll_sketch_to_string_double
            kll_sketch_to_string_float theta_difference theta_intersection theta_intersection_agg
            theta_sketch_agg theta_sketch_estimate theta_union theta_union_agg
            tuple_difference_double tuple_difference_integer tuple_difference_theta_double
            tuple_difference_theta_integer tuple_intersection_agg_double tuple_intersection_agg_integer
            tuple_intersection_double tuple_intersection_integer tuple_intersection_theta_double
            tuple_intersection_theta_integer tuple_sketch_agg_double tuple_sketch_agg_integer
            tuple_sketch_estimate_double tuple_sketch_estimate_integer tuple_sketch_summary_double
            tuple_sketch_summary_integer tuple_sketch_theta_double tuple_sketch_theta_integer
            tuple_union_agg_double tuple_union_agg_integer tuple_union_double tuple_union_integer
            tuple_union_theta_double tuple_union_theta_integer
        """,
        "window": """
            counter_diff cume_dist dense_rank lag lead nth_value ntile percent_rank rank row_number
        """,
        "array and collection": """
            array array_append array_compact array_contains array_distinct array_except array_insert
            array_intersect array_join array_max array_min array_position array_prepend array_remove
            array_repeat array_size array_union arrays_overlap arrays_zip cardinality concat element_at
            flatten get reverse sequence shuffle size slice sort_array try_element_at
            array_slice sort_array_by  # Hive
        """,
        "map and struct": """
            map map_concat map_contains_key map_entries map_from_arrays map_from_entries map_keys
            map_values named_struct str_to_map struct
            create_union extract_union  # Hive
        """,
        "higher-order (lambda)": """
            aggregate array_sort exists filter forall map_filter map_zip_with reduce transform
            transform_keys transform_values zip_with
        """,
        "generator and table function (LATERAL VIEW, FROM)": """
            collations explode explode_outer inline inline_outer json_tuple posexplode posexplode_outer
            range sql_keywords stack variant_explode variant_explode_outer
            parse_url_tuple replicate_rows  # Hive
        """,
        "conditional and predicate": """
            assert_true case coalesce equal_null if ifnull ilike isnan isnotnull isnull like nanvl
            nullif nullifzero nvl nvl2 raise_error regexp regexp_like rlike zeroifnull
            isfalse isnotfalse isnottrue istrue  # Hive
        """,
        "conversion": """
            bigint binary boolean cast date decimal double float int smallint string time timestamp
            tinyint
            try_cast  # syntax like cast, so no SHOW FUNCTIONS row
        """,
        "math and bitwise": """
            abs acos acosh asin asinh atan atan2 atanh bin bit_count bit_get bround cbrt ceil ceiling
            conv cos cosh cot csc degrees e exp expm1 factorial floor getbit greatest hex hypot least
            ln log log10 log1p log2 mod negative pi pmod positive pow power radians rand randn random
            rint round sec shiftleft shiftright shiftrightunsigned sign signum sin sinh sqrt tan tanh
            try_add try_divide try_mod try_multiply try_subtract unhex uniform width_bucket
        """,
        "string": """
            ascii base64 bit_length btrim char char_length character_length chr collate collation
            concat_ws contains decode elt encode endswith find_in_set format_number format_string
            from_base32 initcap instr is_valid_utf8 jaro_winkler_similarity lcase left len length
            levenshtein locate lower lpad ltrim luhn_check make_valid_utf8 mask octet_length overlay
            position printf quote randstr regexp_count regexp_extract regexp_extract_all regexp_instr
            regexp_replace regexp_substr repeat replace right rpad rtrim sentences soundex space split
            split_part startswith substr substring substring_index to_base32 to_binary to_char
            to_number to_varchar translate trim try_to_binary try_to_number try_validate_utf8 ucase
            unbase64 upper validate_utf8
            field mask_first_n mask_hash mask_last_n mask_show_first_n mask_show_last_n  # Hive
        """,
        "url (string parsing only, no network)": """
            parse_url try_parse_url try_url_decode url_decode url_encode
        """,
        "hash and crypto": """
            aes_decrypt aes_encrypt crc32 hash hmac md5 sha sha1 sha2 try_aes_decrypt xxhash64
            murmur_hash  # Hive
        """,
        "date and time": """
            add_months convert_timezone curdate current_date current_time current_timestamp
            current_timezone date_add date_diff date_format date_from_unix_date date_part date_sub
            date_trunc dateadd datediff datepart day dayname dayofmonth dayofweek dayofyear extract
            from_unixtime from_utc_timestamp hour last_day localtime localtimestamp make_date
            make_dt_interval make_interval make_time make_timestamp make_timestamp_ltz
            make_timestamp_ntz make_ym_interval minute month monthname months_between next_day now
            quarter second session_window time_bucket time_diff time_from_micros time_from_millis
            time_from_seconds time_to_micros time_to_millis time_to_seconds time_trunc timestamp_micros
            timestamp_millis timestamp_nanos timestamp_seconds to_date to_time to_timestamp
            to_timestamp_ltz to_timestamp_ntz to_unix_timestamp to_utc_timestamp trunc
            try_make_interval try_make_timestamp try_make_timestamp_ltz try_make_timestamp_ntz
            try_to_date try_to_time try_to_timestamp unix_date unix_micros unix_millis unix_nanos
            unix_seconds unix_timestamp weekday weekofyear window window_time year
            floor_day floor_hour floor_minute floor_month floor_quarter floor_second  # Hive
            floor_week floor_year to_epoch_milli  # Hive
        """,
        "json, csv, variant (in-memory parsing; XML and Avro only as output)": """
            from_csv from_json get_json_object is_valid_variant is_variant_null json_array_length
            json_object_keys parse_json schema_of_csv schema_of_json schema_of_variant
            schema_of_variant_agg to_avro to_csv to_json to_variant_object to_xml try_parse_json
            try_variant_array_append try_variant_get try_variant_insert try_variant_set
            variant_array_append variant_delete variant_get variant_insert variant_set
            variant_strip_nulls
        """,
        "session and row information": """
            current_catalog current_database current_path current_schema current_user
            monotonically_increasing_id session_user spark_partition_id typeof user uuid version
            current_groups logged_in_user  # Hive
        """,
        "geospatial and vector": """
            st_asbinary st_geogfromwkb st_geomfromwkb st_setsrid st_srid vector_avg
            vector_cosine_similarity vector_inner_product vector_l2_distance vector_norm
            vector_normalize vector_sum
        """,
    }
)

# Every name a segment query may call (lower case), on top of an administrator's
# ``allowed_functions``.
ALLOWED_FUNCTIONS: frozenset[str] = frozenset(
    name for names in _FAMILIES.values() for line in names.splitlines() for name in line.partition("#")[0].split()
)
