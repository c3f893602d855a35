use super::*;
use serde_json::json;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn inspect(v: serde_json::Value) -> ContainerInspectResponse {
    serde_json::from_value(v).expect("inspect")
}

fn image_config(v: serde_json::Value) -> ImageConfig {
    serde_json::from_value(v).expect("image config")
}

/// A container as `docker run --env MODE=prod --label team=web --restart unless-stopped
/// --health-cmd 'test -f /healthy' -v data:/data -v /srv/conf:/conf:ro` on an image with
/// `ENV PATH=…`, `CMD ["httpd"]`, `VOLUME /cache`, a label of its own.
fn web() -> ContainerInspectResponse {
    inspect(json!({
        "Id": ID,
        "Name": "/web",
        "Image": "sha256:old",
        "Config": {
            "Hostname": "0123456789ab",
            "Env": ["PATH=/usr/bin:/bin", "MODE=prod"],
            "Cmd": ["httpd"],
            "Image": "127.0.0.1:5000/web:v1",
            "Labels": {"team": "web", "org.opencontainers.image.version": "1"},
            "Volumes": {"/cache": {}},
            "Healthcheck": {"Test": ["CMD-SHELL", "test -f /healthy"], "Interval": 1000000000},
            "WorkingDir": "/srv",
        },
        "HostConfig": {
            "Binds": ["data:/data", "/srv/conf:/conf:ro"],
            "NetworkMode": "backend",
            "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
            "Links": ["/db:/web/database"],
        },
        "Mounts": [
            {"Type": "volume", "Name": "data", "Source": "/var/lib/docker/volumes/data/_data", "Destination": "/data", "RW": true},
            {"Type": "bind", "Source": "/srv/conf", "Destination": "/conf", "RW": false},
            {"Type": "volume", "Name": "f00d", "Source": "/var/lib/docker/volumes/f00d/_data", "Destination": "/cache", "RW": true},
        ],
        "NetworkSettings": {"Networks": {
            "frontend": {"Aliases": ["0123456789ab", "www"], "NetworkID": "n1", "EndpointID": "e1", "IPAddress": "172.18.0.5", "Gateway": "172.18.0.1"},
            "backend": {"Aliases": ["web", "0123456789ab"], "NetworkID": "n2", "IPAddress": "172.19.0.5"},
        }},
    }))
}

fn old_image() -> ImageConfig {
    image_config(json!({
        "Env": ["PATH=/usr/bin:/bin"],
        "Cmd": ["httpd"],
        "Labels": {"org.opencontainers.image.version": "1"},
        "Volumes": {"/cache": {}},
        "WorkingDir": "/srv",
    }))
}

#[test]
fn the_containers_own_settings_stay_and_the_images_defaults_go() {
    let (body, _) = create_body(&web(), Some(&old_image()), "127.0.0.1:5000/web:v1");
    assert_eq!(body.image.as_deref(), Some("127.0.0.1:5000/web:v1"));
    assert_eq!(body.env, Some(vec!["MODE=prod".to_string()]));
    assert_eq!(
        body.labels,
        Some(HashMap::from([("team".to_string(), "web".to_string())]))
    );
    assert_eq!(body.cmd, None, "the new image's CMD applies");
    assert_eq!(body.working_dir, None);
    assert_eq!(body.volumes, None);
    let hc = body.healthcheck.expect("the container's own healthcheck");
    assert_eq!(
        hc.test,
        Some(vec![
            "CMD-SHELL".to_string(),
            "test -f /healthy".to_string()
        ])
    );
    // The engine's default hostname (the old short id) is not carried over.
    assert_eq!(body.hostname, None);
    let host = body.host_config.expect("host config");
    assert_eq!(
        host.restart_policy
            .and_then(|r| r.name)
            .map(|n| n.to_string()),
        Some("unless-stopped".into())
    );
    assert_eq!(host.network_mode.as_deref(), Some("backend"));
    assert_eq!(host.links, Some(vec!["db:database".to_string()]));
    // Named volume and bind as they were; the anonymous volume handed over by name.
    assert_eq!(
        host.binds,
        Some(vec![
            "data:/data".to_string(),
            "/srv/conf:/conf:ro".to_string(),
            "f00d:/cache".to_string()
        ])
    );
}

#[test]
fn networks_keep_their_aliases_but_not_their_addresses() {
    let (body, more) = create_body(&web(), Some(&old_image()), "x:v2");
    let first = body
        .networking_config
        .and_then(|n| n.endpoints_config)
        .expect("the network of the network mode at create");
    let backend = first.get("backend").expect("backend first");
    assert_eq!(backend.aliases, Some(vec!["web".to_string()]));
    assert_eq!(backend.ip_address, None);
    assert_eq!(backend.network_id, None);
    assert_eq!(more.len(), 1);
    let (name, frontend) = &more[0];
    assert_eq!(name, "frontend");
    assert_eq!(frontend.aliases, Some(vec!["www".to_string()]));
    assert_eq!(frontend.endpoint_id, None);
}

#[test]
fn host_networking_gets_no_aliases_and_a_shared_namespace_no_network() {
    let c = inspect(json!({
        "Id": ID, "Name": "/probe",
        "Config": {"Hostname": "lab-host", "Image": "busybox"},
        "HostConfig": {"NetworkMode": "host"},
        "NetworkSettings": {"Networks": {"host": {"Aliases": null, "NetworkID": "h"}}},
    }));
    let (body, more) = create_body(&c, None, "busybox");
    assert_eq!(body.hostname.as_deref(), Some("lab-host"));
    let eps = body
        .networking_config
        .and_then(|n| n.endpoints_config)
        .expect("host");
    assert_eq!(eps["host"].aliases, None);
    assert!(more.is_empty());
    let c = inspect(json!({
        "Id": ID, "Name": "/side",
        "Config": {"Hostname": "other", "Image": "busybox", "ExposedPorts": {"80/tcp": {}}},
        "HostConfig": {"NetworkMode": "container:abc"},
        "NetworkSettings": {"Networks": {}},
    }));
    let (body, more) = create_body(&c, None, "busybox");
    assert_eq!(body.hostname, None, "the engine refuses a hostname there");
    assert_eq!(body.exposed_ports, None);
    assert!(body.networking_config.is_none() && more.is_empty());
}

/// An entrypoint of the container's own drops the image's CMD (the engine's rule): a cmd
/// equal to the image's was given on purpose and stays.
#[test]
fn an_own_entrypoint_keeps_the_cmd() {
    let c = inspect(json!({
        "Id": ID, "Name": "/job",
        "Config": {"Image": "x:v1", "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["httpd"]},
    }));
    let (body, _) = create_body(&c, Some(&old_image()), "x:v1");
    assert_eq!(
        body.entrypoint,
        Some(vec!["/bin/sh".to_string(), "-c".to_string()])
    );
    assert_eq!(body.cmd, Some(vec!["httpd".to_string()]));
}
