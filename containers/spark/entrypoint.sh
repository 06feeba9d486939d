#!/bin/bash
# The container entry point of the spark image, as Spark on Kubernetes starts its pods (the contract of
# apache/spark resource-managers/kubernetes/docker/src/main/dockerfiles/spark/entrypoint.sh):
#   driver <spark-submit arguments>   the driver pod: spark-submit in client mode, bound to the pod's address;
#   executor                          an executor pod: the executor backend, configured by SPARK_* variables
#                                     that the driver sets on the pod;
#   anything else                     run as given.
set -euo pipefail

case "${1:-}" in
  driver)
    shift
    exec /usr/bin/tini -s -- "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:-0.0.0.0}" --deploy-mode client "$@"
    ;;
  executor)
    shift
    # SPARK_JAVA_OPT_<n> variables, in order of n, are the executor's JVM options.
    java_options=()
    while IFS= read -r option; do
      java_options+=("$option")
    done < <(env | sed -n 's/^SPARK_JAVA_OPT_\([0-9]*\)=\(.*\)$/\1 \2/p' | sort -n | cut -d' ' -f2-)
    classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$SPARK_HOME/jars/*${SPARK_EXTRA_CLASSPATH:+:$SPARK_EXTRA_CLASSPATH}"
    exec /usr/bin/tini -s -- "$JAVA_HOME/bin/java" "${java_options[@]}" \
      "-Xms$SPARK_EXECUTOR_MEMORY" "-Xmx$SPARK_EXECUTOR_MEMORY" -cp "$classpath" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" --executor-id "$SPARK_EXECUTOR_ID" --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
  *)
    exec "$@"
    ;;
esac
